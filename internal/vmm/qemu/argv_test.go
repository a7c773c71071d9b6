package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestArgvGolden(t *testing.T) {
	base := func(machine, accel string, tsc int) Params {
		microvm := Params{Machine: machine, Accel: accel, TSCKHz: tsc}.MachineType() == MachineMicrovm
		tcg := Params{Accel: accel}.IsTCG()
		return Params{
			Binary:      "/usr/bin/qemu-system-x86_64",
			Name:        "box-1",
			Machine:     machine,
			Accel:       accel,
			TSCKHz:      tsc,
			CPUs:        2,
			MemoryMiB:   512,
			Kernel:      "/cache/vmlinux-0123456789abcdef",
			Initrd:      "/cache/initramfs-fedcba9876543210.cpio",
			Cmdline:     KernelCmdline(microvm, tcg, tsc, "boxlite.box=box-1"),
			Disks:       []vmm.Disk{{Path: "/boxes/box-1/disk.qcow2", Format: "qcow2"}},
			QMPSocket:   "/run/b/box-1/qmp.sock",
			AgentSocket: "/run/b/box-1/agent.sock",
			ConsoleLog:  "/boxes/box-1/console.log",
		}
	}
	twoDisks := base(MachineMicrovm, "tcg,thread=multi", 2100000)
	twoDisks.Disks = []vmm.Disk{
		{Path: "/layers/base,1.ext4", Format: "raw", ReadOnly: true},
		{Path: "/boxes/box-1/disk.qcow2", Format: "qcow2"},
	}
	withNIC := base(MachineMicrovm, "tcg,thread=multi", 2100000)
	withNIC.NIC = &vmm.NIC{Socket: "/run/b/box-1/net.sock", MAC: "5a:94:ef:e4:0c:ee"}
	q35NIC := base(MachineQ35, "kvm", 0)
	q35NIC.NIC = withNIC.NIC
	slirp := base(MachineMicrovm, "tcg,thread=multi", 2100000)
	slirp.NIC = &vmm.NIC{Slirp: true, MAC: "5a:94:ef:e4:0c:ee", HostForwards: []string{"tcp:127.0.0.1:8080-:80", "udp:127.0.0.1:5353-:53"}}
	noConsole := base(MachineMicrovm, "kvm", 0)
	noConsole.ConsoleLog = ""
	noConsole.Name = ""

	tests := []struct {
		name string
		p    Params
	}{
		{"microvm_tcg_tsc", base(MachineMicrovm, "tcg,thread=multi", 2100000)},
		{"microvm_kvm", base(MachineMicrovm, "kvm", 0)},
		{"q35_fallback_tcg_no_tsc", base(MachineMicrovm, "tcg,thread=multi", 0)},
		{"q35_kvm", base(MachineQ35, "kvm", 0)},
		{"two_disks_one_read_only", twoDisks},
		{"no_console_no_name", noConsole},
		{"microvm_nic", withNIC},
		{"q35_nic", q35NIC},
		{"microvm_slirp", slirp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(Argv(tt.p), "\n") + "\n"
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got != string(want) {
				t.Errorf("Argv mismatch with %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestMachineType(t *testing.T) {
	tests := []struct {
		name    string
		machine string
		accel   string
		tsc     int
		want    string
	}{
		{"microvm kvm", MachineMicrovm, "kvm", 0, MachineMicrovm},
		{"microvm tcg with tsc", MachineMicrovm, "tcg,thread=multi", 2100000, MachineMicrovm},
		{"microvm tcg without tsc", MachineMicrovm, "tcg,thread=multi", 0, MachineQ35},
		{"microvm bare tcg without tsc", MachineMicrovm, "tcg", 0, MachineQ35},
		{"q35 tcg with tsc", MachineQ35, "tcg", 2100000, MachineQ35},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Params{Machine: tt.machine, Accel: tt.accel, TSCKHz: tt.tsc}
			if got := p.MachineType(); got != tt.want {
				t.Errorf("MachineType() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKernelCmdline(t *testing.T) {
	tests := []struct {
		name         string
		microvm, tcg bool
		tsc          int
		extra        string
		want, reject []string
	}{
		{"microvm tcg tsc", true, true, 2100000, "x=1", []string{"console=ttyS0", "panic=-1", "tsc=reliable", "no_timer_check", "tsc_early_khz=2100000", "x=1"}, nil},
		{"microvm tcg no tsc", true, true, 0, "", []string{"tsc=reliable"}, []string{"tsc_early_khz"}},
		{"q35 tcg", false, true, 2100000, "", []string{"tsc=reliable"}, []string{"tsc_early_khz"}},
		{"microvm kvm", true, false, 2100000, "", []string{"panic=-1"}, []string{"tsc=reliable", "tsc_early_khz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := KernelCmdline(tt.microvm, tt.tcg, tt.tsc, tt.extra)
			fields := strings.Fields(got)
			for _, w := range tt.want {
				if !contains(fields, w) {
					t.Errorf("KernelCmdline() = %q, lacks %q", got, w)
				}
			}
			for _, r := range tt.reject {
				if strings.Contains(got, r) {
					t.Errorf("KernelCmdline() = %q, has %q", got, r)
				}
			}
			if tt.extra != "" && !strings.HasSuffix(got, " "+tt.extra) {
				t.Errorf("KernelCmdline() = %q, extra not last", got)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestDiskNode(t *testing.T) {
	for i, want := range map[int]string{0: "vda", 1: "vdb", 25: "vdz", 26: "vdaa", 27: "vdab", 701: "vdzz", 702: "vdaaa"} {
		if got := diskNode(i); got != want {
			t.Errorf("diskNode(%d) = %q, want %q", i, got, want)
		}
	}
}

func TestPanicLine(t *testing.T) {
	console := "boot\r\n[    1.9] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000\r\n[    1.91] CPU: 0 PID: 1\r\n"
	want := "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000"
	if got := panicLine([]byte(console)); got != want {
		t.Errorf("panicLine() = %q, want %q", got, want)
	}
	if got := panicLine([]byte("all fine\n")); got != "" {
		t.Errorf("panicLine() = %q, want none", got)
	}
}

func TestTailBuffer(t *testing.T) {
	b := newTailBuffer(8)
	b.Write([]byte("0123456"))
	b.Write([]byte("789ab"))
	if got, want := b.String(), "456789ab"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
}
