package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func TestLocate(t *testing.T) {
	// bzImage with a kernel_version string but a name that carries no release.
	withVersion := makeBzImage(lz4Kernel(makeELF(elfOptions{})), 27)
	copy(withVersion[0x200+0x300:], "6.9.1-test (builder@host) #1 SMP\x00")
	withVersion[0x20e], withVersion[0x20f] = 0x00, 0x03

	tests := []struct {
		name     string
		boot     []string          // files created in the fake /boot
		explicit string            // relative to the fake /boot unless absolute
		env      map[string]string // $BOXLITE_KERNEL is relative to the fake /boot
		want     Kernel            // Path relative to the fake /boot, ModulesDir to the fake /lib/modules
		wantErr  string
	}{
		{
			name: "newest cloud kernel wins",
			boot: []string{"vmlinuz-6.1.0-9-cloud-amd64", "vmlinuz-6.1.0-57-cloud-amd64", "vmlinuz-6.1.0-10-cloud-amd64", "vmlinuz-6.5.0-1-amd64"},
			want: Kernel{Path: "vmlinuz-6.1.0-57-cloud-amd64", Release: "6.1.0-57-cloud-amd64", ModulesDir: "6.1.0-57-cloud-amd64"},
		},
		{
			name: "any vmlinuz when no cloud kernel",
			boot: []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64", "config-6.1.0-99-amd64"},
			want: Kernel{Path: "vmlinuz-6.1.0-10-amd64", Release: "6.1.0-10-amd64", ModulesDir: "6.1.0-10-amd64"},
		},
		{
			name:    "nothing installed",
			boot:    []string{"config-6.1.0-57-cloud-amd64"},
			wantErr: "apt-get install linux-image-cloud-amd64",
		},
		{
			name:     "explicit path beats env and /boot",
			boot:     []string{"vmlinuz-6.1.0-57-cloud-amd64", "vmlinuz-5.10.0-1-cloud-amd64", "vmlinuz-4.19.0-1-cloud-amd64"},
			explicit: "vmlinuz-5.10.0-1-cloud-amd64",
			env:      map[string]string{EnvKernel: "vmlinuz-4.19.0-1-cloud-amd64"},
			want:     Kernel{Path: "vmlinuz-5.10.0-1-cloud-amd64", Release: "5.10.0-1-cloud-amd64", ModulesDir: "5.10.0-1-cloud-amd64"},
		},
		{
			name: "env beats /boot",
			boot: []string{"vmlinuz-6.1.0-57-cloud-amd64", "vmlinuz-4.19.0-1-cloud-amd64"},
			env:  map[string]string{EnvKernel: "vmlinuz-4.19.0-1-cloud-amd64"},
			want: Kernel{Path: "vmlinuz-4.19.0-1-cloud-amd64", Release: "4.19.0-1-cloud-amd64", ModulesDir: "4.19.0-1-cloud-amd64"},
		},
		{
			name: "modules env overrides",
			boot: []string{"vmlinuz-6.1.0-57-cloud-amd64"},
			env:  map[string]string{EnvKernelModules: "/opt/mods"},
			want: Kernel{Path: "vmlinuz-6.1.0-57-cloud-amd64", Release: "6.1.0-57-cloud-amd64", ModulesDir: "/opt/mods"},
		},
		{
			name:     "release read from the bzImage header",
			boot:     []string{"bzImage"},
			explicit: "bzImage",
			want:     Kernel{Path: "bzImage", Release: "6.9.1-test", ModulesDir: "6.9.1-test"},
		},
		{
			name:     "explicit path missing",
			boot:     []string{"vmlinuz-6.1.0-57-cloud-amd64"},
			explicit: "/nonexistent/vmlinuz-x",
			wantErr:  `"/nonexistent/vmlinuz-x"`,
		},
		{
			name:    "env path missing",
			boot:    []string{"vmlinuz-6.1.0-57-cloud-amd64"},
			env:     map[string]string{EnvKernel: "/nonexistent/k"},
			wantErr: `"/nonexistent/k" (from $BOXLITE_KERNEL)`,
		},
		{
			name:     "explicit path is a directory",
			boot:     []string{"dir/vmlinuz-1"},
			explicit: "dir",
			wantErr:  "not a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			boot := filepath.Join(root, "boot")
			mods := filepath.Join(root, "lib", "modules")
			for _, name := range tt.boot {
				p := filepath.Join(boot, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				data := []byte("kernel " + name)
				if name == "bzImage" {
					data = withVersion
				}
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			abs := func(p string) string {
				if p == "" || filepath.IsAbs(p) {
					return p
				}
				return filepath.Join(boot, p)
			}
			getenv := func(k string) string {
				if k == EnvKernel {
					return abs(tt.env[k])
				}
				return tt.env[k]
			}

			got, err := locate(getenv, boot, mods, abs(tt.explicit))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("locate = %+v, want error containing %q", got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tt.wantErr)
				}
				if !errors.Is(err, errdefs.ErrMissingDependency) {
					t.Fatalf("error %q does not wrap ErrMissingDependency", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("locate: %v", err)
			}
			want := tt.want
			want.Path = abs(want.Path)
			if !filepath.IsAbs(want.ModulesDir) {
				want.ModulesDir = filepath.Join(mods, want.ModulesDir)
			}
			if got != want {
				t.Fatalf("locate = %+v, want %+v", got, want)
			}
		})
	}
}

// TestLocateHost checks the default search on this host's /boot.
func TestLocateHost(t *testing.T) {
	if _, err := os.Stat(hostKernel); err != nil {
		skipOrFail(t, fmt.Sprintf("%s absent (install it with %q)", hostKernel, InstallHint))
	}
	k, err := locate(func(string) string { return "" }, "/boot", "/lib/modules", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(k.Release, "-cloud-amd64") || k.ModulesDir != "/lib/modules/"+k.Release {
		t.Fatalf("locate = %+v, want a cloud kernel with its modules dir", k)
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"vmlinuz-6.1.0-9-cloud-amd64", "vmlinuz-6.1.0-57-cloud-amd64", -1},
		{"vmlinuz-6.1.0-57-cloud-amd64", "vmlinuz-6.1.0-57-cloud-amd64", 0},
		{"vmlinuz-6.10.0-1-amd64", "vmlinuz-6.9.0-1-amd64", 1},
		{"vmlinuz-6.1.0-007", "vmlinuz-6.1.0-7", 0},
		{"vmlinuz-6.1", "vmlinuz-6.1.0", -1},
		{"vmlinuz-6.1.0-rc1", "vmlinuz-6.1.0-rc2", -1},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			if got := compareVersions(tt.a, tt.b); got != tt.want {
				t.Fatalf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
			}
			if got := compareVersions(tt.b, tt.a); got != -tt.want {
				t.Fatalf("compareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
			}
		})
	}
}
