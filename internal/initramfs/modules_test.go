package initramfs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeModulesDep is a modules.dep in depmod's format: each module's full
// dependency closure, what loads last listed first.
const fakeModulesDep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/fs/btrfs/btrfs.ko: kernel/lib/zstd.ko.zst
kernel/lib/zstd.ko.zst:
kernel/test/a.ko: kernel/test/b.ko
kernel/test/b.ko: kernel/test/a.ko
`

const fakeModulesBuiltin = `kernel/fs/ext4/ext4.ko
kernel/drivers/char/hw_random/rng-core.ko
`

// fakeModulesAlias gives virtio-rng two bus aliases, virtio_mmio two of
// its own kinds, libcrc32c a name alias (loaded unconditionally) and
// virtio_net none.
const fakeModulesAlias = `# Aliases extracted from modules themselves.
alias virtio:d00000002v* virtio_blk
alias virtio:d00000004v* virtio_rng
alias pci:v00001AF4d00001005sv*sd*bc*sc*i* virtio_rng
alias of:N*T*Cvirtio,mmio virtio_mmio
alias acpi*:LNRO0005:* virtio_mmio
alias crypto-crc32c libcrc32c
alias virtio:d00000099v* libcrc32c
`

func writeFakeModules(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(fakeModulesAlias), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(fakeModulesDep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(fakeModulesBuiltin), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestModuleOrder(t *testing.T) {
	const (
		virtio     = "kernel/drivers/virtio/virtio.ko"
		ring       = "kernel/drivers/virtio/virtio_ring.ko"
		mmio       = "kernel/drivers/virtio/virtio_mmio.ko"
		blk        = "kernel/drivers/block/virtio_blk.ko"
		net        = "kernel/drivers/net/virtio_net.ko"
		netFO      = "kernel/drivers/net/net_failover.ko"
		failover   = "kernel/net/core/failover.ko"
		virtioRNG  = "kernel/drivers/char/hw_random/virtio-rng.ko"
		zstdModule = "kernel/lib/zstd.ko.zst"
	)
	tests := []struct {
		name    string
		names   []string
		want    []string
		wantErr string
	}{
		{name: "none", names: nil, want: nil},
		{name: "no dependencies", names: []string{"virtio"}, want: []string{virtio}},
		{name: "dependencies first", names: []string{"virtio_blk"}, want: []string{ring, virtio, blk}},
		{name: "each once", names: []string{"virtio_mmio", "virtio_blk", "virtio_ring"}, want: []string{ring, virtio, mmio, blk}},
		{name: "transitive", names: []string{"virtio_net"}, want: []string{ring, virtio, failover, netFO, net}},
		{name: "dash and underscore", names: []string{"virtio-blk", "virtio_rng"}, want: []string{ring, virtio, blk, virtioRNG}},
		{name: "file spelling", names: []string{"virtio-rng.ko"}, want: []string{ring, virtio, virtioRNG}},
		{name: "built in skipped", names: []string{"ext4", "rng_core", "virtio"}, want: []string{virtio}},
		{name: "unknown", names: []string{"virtio", "nosuchmod"}, wantErr: `kernel module "nosuchmod": neither in`},
		{name: "compressed module", names: []string{"xfs"}, wantErr: "compressed (.ko.xz): compressed modules are unsupported"},
		{name: "compressed dependency", names: []string{"btrfs"}, wantErr: zstdModule + " is compressed (.ko.zst)"},
		{name: "cycle", names: []string{"a"}, wantErr: "dependency cycle"},
	}
	dir := t.TempDir()
	writeFakeModules(t, dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ModuleOrder(dir, tt.names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ModuleOrder error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ModuleOrder: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ModuleOrder = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestModuleOrderBadFiles(t *testing.T) {
	tests := []struct {
		name    string
		dep     *string // nil: no modules.dep
		wantErr string
	}{
		{name: "no modules.dep", wantErr: "modules.dep: no such file"},
		{name: "malformed line", dep: ptr("kernel/a.ko kernel/b.ko\n"), wantErr: "modules.dep:1: malformed line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.dep != nil {
				if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(*tt.dep), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ModuleOrder(dir, []string{"a"})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ModuleOrder error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// hostModulesDir is the module directory of the Debian cloud kernel that
// scripts/install-deps.sh installs (the newest when several are), or ""
// when none is installed.
var hostModulesDir = func() string {
	dirs, _ := filepath.Glob("/lib/modules/*-cloud-amd64")
	if len(dirs) == 0 {
		return "/lib/modules/none-cloud-amd64"
	}
	slices.Sort(dirs)
	return dirs[len(dirs)-1]
}()

// requireHostModules skips without the host kernel's modules, and fails
// under CI, which installs them.
func requireHostModules(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(hostModulesDir, "modules.dep")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s absent in CI: %v", hostModulesDir, err)
		}
		t.Skipf("%s absent (install it with %q)", hostModulesDir, "apt-get install linux-image-cloud-amd64")
	}
}

// TestModuleOrderHost resolves the default modules against the host kernel.
func TestModuleOrderHost(t *testing.T) {
	requireHostModules(t)
	got, err := ModuleOrder(hostModulesDir, append(append([]string(nil), DefaultModules...), DefaultLateModules...))
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, p := range got {
		if _, dup := pos[p]; dup {
			t.Fatalf("%s listed twice", p)
		}
		pos[p] = i
		if _, err := os.Stat(filepath.Join(hostModulesDir, p)); err != nil {
			t.Errorf("listed module missing: %v", err)
		}
	}
	for _, before := range [][2]string{
		{"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio_mmio.ko"},
		{"kernel/drivers/virtio/virtio.ko", "kernel/drivers/block/virtio_blk.ko"},
		{"kernel/net/vmw_vsock/vsock.ko", "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko"},
		{"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko", "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko"},
		{"kernel/drivers/virtio/virtio.ko", "kernel/drivers/char/hw_random/virtio-rng.ko"},
	} {
		a, okA := pos[before[0]]
		b, okB := pos[before[1]]
		if !okA || !okB || a > b {
			t.Errorf("want %s before %s in %q", before[0], before[1], got)
		}
	}
	t.Logf("load order: %q", got)
}
