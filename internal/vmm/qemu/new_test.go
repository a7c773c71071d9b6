package qemu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/boxlite-go/boxlite/internal/vmm"
)

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	initrd := filepath.Join(dir, "initrd")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, []byte("\x7fELF-ish"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ok := vmm.Config{Name: "t", Dir: dir, Kernel: kernel, Initrd: initrd, Accel: "tcg"}
	long := filepath.Join(dir, strings.Repeat("d", 100))
	if err := os.Mkdir(long, 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		mutate  func(*vmm.Config)
		path    string // $PATH, "" keeps it
		want    error
		message string
	}{
		{"missing kernel", func(c *vmm.Config) { c.Kernel = filepath.Join(dir, "nope") }, "", errdefs.ErrMissingDependency, "nope"},
		{"missing initrd", func(c *vmm.Config) { c.Initrd = filepath.Join(dir, "nope") }, "", errdefs.ErrMissingDependency, "initrd"},
		{"no kernel", func(c *vmm.Config) { c.Kernel = "" }, "", errdefs.ErrInvalidArgument, "no kernel"},
		{"no dir", func(c *vmm.Config) { c.Dir = "" }, "", errdefs.ErrInvalidArgument, "directory"},
		{"socket path too long", func(c *vmm.Config) { c.Dir = long }, "", errdefs.ErrInvalidArgument, "longer than"},
		{"unknown accel", func(c *vmm.Config) { c.Accel = "hvf" }, "", errdefs.ErrInvalidArgument, "hvf"},
		{"unknown disk format", func(c *vmm.Config) { c.Disks = []vmm.Disk{{Path: initrd, Format: "vmdk"}} }, "", errdefs.ErrInvalidArgument, "vmdk"},
		{"qemu not installed", func(*vmm.Config) {}, dir, errdefs.ErrMissingDependency, "install it: apt-get install qemu-system-x86"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != "" {
				t.Setenv("PATH", tt.path)
			}
			cfg := ok
			tt.mutate(&cfg)
			_, err := New(cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("New() error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("New() error = %q, want it to mention %q", err, tt.message)
			}
		})
	}
}

func TestNewResolves(t *testing.T) {
	if _, err := exec.LookPath(Binary); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	vmlinux := filepath.Join(dir, "vmlinux")
	bzImage := filepath.Join(dir, "bzImage")
	initrd := filepath.Join(dir, "initrd")
	os.WriteFile(vmlinux, []byte("\x7fELF"), 0o644)
	os.WriteFile(bzImage, []byte("MZ\x00\x00"), 0o644)
	os.WriteFile(initrd, nil, 0o644)

	tests := []struct {
		name        string
		kernel      string
		accel       string
		wantMachine string
		wantAccel   string
	}{
		{"vmlinux tcg", vmlinux, "tcg", MachineMicrovm, "tcg,thread=multi"},
		{"vmlinux kvm", vmlinux, "kvm", MachineMicrovm, "kvm"},
		{"bzImage tcg", bzImage, "tcg", MachineQ35, "tcg,thread=multi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(vmm.Config{Dir: dir, Kernel: tt.kernel, Initrd: initrd, Accel: tt.accel})
			if err != nil {
				t.Fatal(err)
			}
			p := m.Params()
			if p.MachineType() != tt.wantMachine || p.Accel != tt.wantAccel {
				t.Errorf("machine %q accel %q, want %q %q", p.MachineType(), p.Accel, tt.wantMachine, tt.wantAccel)
			}
			if p.CPUs != DefaultCPUs || p.MemoryMiB != DefaultMemoryMiB {
				t.Errorf("cpus %d memory %d, want the defaults", p.CPUs, p.MemoryMiB)
			}
			if p.ConsoleLog != filepath.Join(dir, ConsoleLogName) {
				t.Errorf("console log %q, want one in the machine dir", p.ConsoleLog)
			}
			if m.PID() != 0 {
				t.Errorf("PID() = %d before Start", m.PID())
			}
		})
	}
}

func TestNewc(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not in $PATH")
	}
	archive := newc([]cpioFile{
		{name: "init", mode: 0o100755, data: []byte("#!/bin/sh\n")},
		{name: "modules", mode: 0o40755},
		{name: "modules/a.ko", mode: 0o100644, data: []byte("abcde")},
	})
	cmd := exec.Command(cpio, "-t", "-v")
	cmd.Stdin = strings.NewReader(string(archive))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, want := range []string{"init", "modules", "modules/a.ko"} {
		if !strings.Contains(string(out), " "+want+"\n") {
			t.Errorf("cpio -t lacks %q:\n%s", want, out)
		}
	}
}
