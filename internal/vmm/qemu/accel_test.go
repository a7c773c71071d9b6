package qemu

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDetectAccel(t *testing.T) {
	dir := t.TempDir()
	rw := filepath.Join(dir, "kvm")
	if err := os.WriteFile(rw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mods := func(names ...string) string {
		d := t.TempDir()
		for _, n := range names {
			os.Mkdir(filepath.Join(d, n), 0o755)
		}
		return d
	}
	tests := []struct {
		name    string
		device  string
		modules string
		want    string
	}{
		{"intel", rw, mods("kvm", "kvm_intel"), AccelKVM},
		{"amd", rw, mods("kvm", "kvm_amd"), AccelKVM},
		{"pagetable-based kvm only", rw, mods("kvm", "kvm_pvm"), AccelTCG},
		{"no device", filepath.Join(dir, "missing"), mods("kvm_intel"), AccelTCG},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldDev, oldMods := kvmDevice, sysModules
			kvmDevice, sysModules = tt.device, tt.modules
			t.Cleanup(func() { kvmDevice, sysModules = oldDev, oldMods })
			if got := DetectAccel(); got != tt.want {
				t.Errorf("DetectAccel() = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("this host", func(t *testing.T) {
		got := DetectAccel()
		if got != AccelKVM && got != AccelTCG {
			t.Fatalf("DetectAccel() = %q", got)
		}
		t.Logf("DetectAccel() = %q", got)
	})
}

func TestQEMUAccel(t *testing.T) {
	for in, want := range map[string]string{AccelTCG: "tcg,thread=multi", AccelKVM: "kvm"} {
		if got := qemuAccel(in); got != want {
			t.Errorf("qemuAccel(%q) = %q, want %q", in, got, want)
		}
	}
}
