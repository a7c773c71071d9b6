package initramfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// fakeKernelModules writes modules.dep and a .ko file for each of its
// modules into a new directory.
func fakeKernelModules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFakeModules(t, dir)
	for _, line := range strings.Split(fakeModulesDep, "\n") {
		mod, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		p := filepath.Join(dir, mod)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("ELF module "+filepath.Base(mod)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuild(t *testing.T) {
	mods := fakeKernelModules(t)
	agentDir := t.TempDir()
	agent := filepath.Join(agentDir, "boxlite-agent")
	if err := os.WriteFile(agent, []byte("#!agent binary"), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		opts        BuildOptions // CacheDir is set per case
		wantList    string       // /etc/boxlite/modules
		wantModules []string     // the files in /lib/modules
		wantErr     string
		wantIs      error
	}{
		{
			name: "modules with dependencies",
			opts: BuildOptions{AgentPath: agent, ModulesDir: mods, Modules: []string{"virtio-blk", "virtio_rng", "ext4"}},
			wantList: "virtio_ring.ko virtio.ko virtio_blk.ko when virtio:d00000002v*\n" +
				"virtio_ring.ko virtio.ko virtio-rng.ko when virtio:d00000004v* pci:v00001AF4d00001005sv*sd*bc*sc*i*\n",
			wantModules: []string{"virtio_ring.ko", "virtio.ko", "virtio_blk.ko", "virtio-rng.ko"},
		},
		{
			name: "late modules after the marker; a module with a name alias is always loaded",
			opts: BuildOptions{AgentPath: agent, ModulesDir: mods, Modules: []string{"virtio_mmio", "libcrc32c"}, LateModules: []string{"virtio_net"}},
			wantList: "virtio_ring.ko virtio.ko virtio_mmio.ko when of:N*T*Cvirtio,mmio acpi*:LNRO0005:*\n" +
				"libcrc32c.ko\n" +
				LateMarker + "\n" +
				"virtio_ring.ko virtio.ko failover.ko net_failover.ko virtio_net.ko\n",
			wantModules: []string{"virtio_ring.ko", "virtio.ko", "virtio_mmio.ko", "libcrc32c.ko", "failover.ko", "net_failover.ko", "virtio_net.ko"},
		},
		{
			name: "no modules directory means no modules",
			opts: BuildOptions{AgentPath: agent},
		},
		{
			name: "explicitly no modules",
			opts: BuildOptions{AgentPath: agent, ModulesDir: mods, Modules: []string{}},
		},
		{
			name:    "missing agent",
			opts:    BuildOptions{AgentPath: filepath.Join(agentDir, "nope", "boxlite-agent"), ModulesDir: mods},
			wantErr: "CGO_ENABLED=0 go build -o " + filepath.Join(agentDir, "nope", "boxlite-agent") + " ./cmd/boxlite-agent",
			wantIs:  errdefs.ErrMissingDependency,
		},
		{
			name:    "missing modules directory",
			opts:    BuildOptions{AgentPath: agent, ModulesDir: filepath.Join(mods, "nope")},
			wantErr: "apt-get install linux-image-cloud-amd64",
			wantIs:  errdefs.ErrMissingDependency,
		},
		{
			name:    "unknown module",
			opts:    BuildOptions{AgentPath: agent, ModulesDir: mods, Modules: []string{"nosuchmod"}},
			wantErr: `"nosuchmod"`,
		},
		{
			name:    "modules without a directory",
			opts:    BuildOptions{AgentPath: agent, Modules: []string{"virtio"}},
			wantErr: "without a modules directory",
			wantIs:  errdefs.ErrInvalidArgument,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.CacheDir = filepath.Join(t.TempDir(), "cache")
			got, err := Build(t.Context(), o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Build error = %v, want one containing %q", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Fatalf("Build error %q does not wrap %v", err, tt.wantIs)
				}
				if entries, _ := os.ReadDir(o.CacheDir); len(entries) != 0 {
					t.Fatalf("failed Build left %d files in the cache", len(entries))
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if base := filepath.Base(got); filepath.Dir(got) != o.CacheDir || !strings.HasPrefix(base, "initramfs-") ||
				!strings.HasSuffix(base, ".cpio") || len(base) != len("initramfs-.cpio")+16 {
				t.Fatalf("Build = %q, want <cache>/initramfs-<16 hex>.cpio", got)
			}
			data, err := os.ReadFile(got)
			if err != nil {
				t.Fatal(err)
			}
			entries, err := readCPIO(data)
			if err != nil {
				t.Fatalf("readCPIO: %v", err)
			}
			files := map[string]entry{}
			for _, e := range entries {
				files[e.name] = e
			}
			for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "box", "etc", "lib", "lib/modules", "etc/boxlite"} {
				if e, ok := files[d]; !ok || e.mode&0o170000 != modeDir {
					t.Errorf("directory /%s missing", d)
				}
			}
			if e := files["tmp"]; e.mode&0o7777 != 0o1777 {
				t.Errorf("/tmp mode %o, want 1777", e.mode&0o7777)
			}
			if e := files["dev/console"]; e.mode != modeCharDev|0o600 || e.rmajor != 5 || e.rminor != 1 {
				t.Errorf("/dev/console = %+v, want char device 5:1", e)
			}
			if e := files["init"]; e.mode != modeRegular|0o755 || string(e.data) != "#!agent binary" {
				t.Errorf("/init = mode %o %q, want the agent with mode 0755", e.mode, e.data)
			}
			for _, m := range tt.wantModules {
				if e, ok := files["lib/modules/"+m]; !ok || string(e.data) != "ELF module "+m {
					t.Errorf("/lib/modules/%s missing or wrong", m)
				}
			}
			if got := string(files["etc/boxlite/modules"].data); got != tt.wantList {
				t.Errorf("/etc/boxlite/modules = %q, want %q", got, tt.wantList)
			}
			var onlyModules []string
			for name := range files {
				if strings.HasPrefix(name, "lib/modules/") {
					onlyModules = append(onlyModules, strings.TrimPrefix(name, "lib/modules/"))
				}
			}
			slices.Sort(onlyModules)
			want := slices.Sorted(slices.Values(tt.wantModules))
			if !slices.Equal(onlyModules, want) {
				t.Errorf("/lib/modules holds %q, want %q", onlyModules, want)
			}
		})
	}
}

func TestBuildCache(t *testing.T) {
	mods := fakeKernelModules(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "boxlite-agent")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(agent, "agent v1")
	cache := filepath.Join(dir, "cache")
	o := BuildOptions{AgentPath: agent, ModulesDir: mods, Modules: []string{"virtio_blk"}, CacheDir: cache}
	build := func() string {
		t.Helper()
		p, err := Build(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	first := build()
	firstBytes, _ := os.ReadFile(first)
	if err := os.Remove(first); err != nil {
		t.Fatal(err)
	}
	if again := build(); again != first {
		t.Fatalf("rebuild = %q, want %q", again, first)
	}
	if b, _ := os.ReadFile(first); string(b) != string(firstBytes) {
		t.Fatalf("same inputs gave different bytes")
	}

	// A cached archive is reused as is.
	write(first, "marker")
	if again := build(); again != first {
		t.Fatalf("cached build = %q, want %q", again, first)
	}
	if b, _ := os.ReadFile(first); string(b) != "marker" {
		t.Fatalf("cached archive was rewritten")
	}

	// Changing any input changes the key.
	seen := map[string]string{first: "first"}
	changes := []struct {
		name   string
		change func()
	}{
		{"agent bytes", func() { write(agent, "agent v2") }},
		{"module bytes", func() { write(filepath.Join(mods, "kernel/drivers/block/virtio_blk.ko"), "patched") }},
		{"module list", func() { o.Modules = []string{"virtio_blk", "virtio_mmio"} }},
	}
	for _, c := range changes {
		c.change()
		p := build()
		if prev, dup := seen[p]; dup {
			t.Fatalf("after changing %s the cache key equals the one after %s", c.name, prev)
		}
		seen[p] = c.name
	}
}

func TestBuildConcurrent(t *testing.T) {
	mods := fakeKernelModules(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "boxlite-agent")
	if err := os.WriteFile(agent, make([]byte, 4<<20), 0o755); err != nil {
		t.Fatal(err)
	}
	o := BuildOptions{AgentPath: agent, ModulesDir: mods, Modules: []string{"virtio_net"}, CacheDir: filepath.Join(dir, "cache")}
	const n = 8
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { paths[i], errs[i] = Build(t.Context(), o) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("caller %d: Build = %q, %v; want %q", i, paths[i], errs[i], paths[0])
		}
	}
	entries, err := os.ReadDir(o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("cache holds %d files, want 1 (temporary files left behind?)", len(entries))
	}
	data, _ := os.ReadFile(paths[0])
	if _, err := readCPIO(data); err != nil {
		t.Fatalf("concurrently built archive is corrupt: %v", err)
	}
}

func TestBuildCanceled(t *testing.T) {
	mods := fakeKernelModules(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "boxlite-agent")
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	cache := filepath.Join(dir, "cache")
	_, err := Build(ctx, BuildOptions{AgentPath: agent, ModulesDir: mods, CacheDir: cache, Modules: []string{"virtio"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build error = %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Fatalf("canceled Build left %d files", len(entries))
	}
}

// TestBuildHost builds the default initramfs from the host's kernel
// modules: late modules follow the marker, and each driver is tied to its
// device's aliases.
func TestBuildHost(t *testing.T) {
	requireHostModules(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "boxlite-agent")
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := Build(t.Context(), BuildOptions{AgentPath: agent, ModulesDir: hostModulesDir, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(data)
	if err != nil {
		t.Fatal(err)
	}
	var list string
	for _, e := range entries {
		if e.name == "etc/boxlite/modules" {
			list = string(e.data)
		}
	}
	if !strings.HasPrefix(list, "virtio_ring.ko virtio.ko virtio_mmio.ko ") || !strings.HasSuffix(list, " vmw_vsock_virtio_transport.ko when virtio:d00000013v*\n") {
		t.Fatalf("/etc/boxlite/modules = %q", list)
	}
	early, late, ok := strings.Cut(list, LateMarker+"\n")
	// Each driver waits for its device: the microvm transport for its
	// ACPI device, the others for their virtio device ID.
	for _, want := range []struct{ in, line string }{
		{early, "virtio_mmio.ko when "},
		{early, "virtio_blk.ko when virtio:d00000002v*\n"},
		{late, "virtio_net.ko when virtio:d00000001v*\n"},
		{late, "vmw_vsock_virtio_transport.ko when virtio:d00000013v*\n"},
	} {
		if !ok || !strings.Contains(want.in, want.line) {
			t.Errorf("module list lacks %q:\n%s", want.line, list)
		}
	}
	t.Logf("%d bytes, modules:\n%s", len(data), list)
}

// TestBuildWithoutAliases: a modules directory without modules.alias (a
// hand-made kernel tree) ties no module to a device: all are loaded.
func TestBuildWithoutAliases(t *testing.T) {
	mods := fakeKernelModules(t)
	if err := os.Remove(filepath.Join(mods, "modules.alias")); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := Build(t.Context(), BuildOptions{AgentPath: agent, ModulesDir: mods, Modules: []string{"virtio_blk"}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.name == "etc/boxlite/modules" {
			if want := "virtio_ring.ko virtio.ko virtio_blk.ko\n"; string(e.data) != want {
				t.Fatalf("/etc/boxlite/modules = %q, want %q", e.data, want)
			}
			return
		}
	}
	t.Fatal("no /etc/boxlite/modules")
}
