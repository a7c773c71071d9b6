package qemu

import (
	"os"
	"path/filepath"
)

// Accelerators DetectAccel reports.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// kvmDevice is the KVM device node and sysModules the kernel's module
// directory; variables for tests.
var (
	kvmDevice  = "/dev/kvm"
	sysModules = "/sys/module"
)

// hardwareKVM are the modules that run unmodified guests with VT-x/AMD-V.
var hardwareKVM = []string{"kvm_intel", "kvm_amd"}

// DetectAccel returns AccelKVM if /dev/kvm can be opened for reading and
// writing and the host runs hardware-assisted KVM (kvm_intel or kvm_amd),
// else AccelTCG.
//
// An openable /dev/kvm alone is not proof that KVM boots guests: the
// pagetable-based kvm_pvm module, found under some nested hypervisors,
// opens, creates VMs and runs trivial code, yet an unmodified Linux guest
// never gets going (measured: 100% system CPU, no console output).
// vmm.Config.Accel overrides the detection.
func DetectAccel() string {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return AccelTCG
	}
	f.Close()
	for _, m := range hardwareKVM {
		if _, err := os.Stat(filepath.Join(sysModules, m)); err == nil {
			return AccelKVM
		}
	}
	return AccelTCG
}

// qemuAccel turns an accelerator name into QEMU's -accel value: TCG runs
// one host thread per vCPU.
func qemuAccel(accel string) string {
	if accel == AccelTCG {
		return "tcg,thread=multi"
	}
	return accel
}
