// Package qemu is the QEMU backend of [vmm.Machine]: one qemu-system-x86_64
// process per machine, driven over QMP.
//
// The command line is built by [Argv], a pure function from resolved
// [Params] to argv, golden-tested in testdata/*.golden. The preferred machine
// type is microvm booting an uncompressed PVH vmlinux with virtio-mmio
// devices; q35 with virtio-pci is the fallback. Under TCG (no KVM) a microvm
// guest has no timer to calibrate its TSC against, and about a third of the
// boots hang unless the kernel is told the frequency with tsc_early_khz: so
// the host's TSC frequency is measured ([TSCKHz]) and, when it is unknown,
// the machine falls back to q35.
//
// [New] resolves a [vmm.Config] (accelerator by [DetectAccel], TSC, QEMU
// binary from $PATH) into Params. [Machine.Start] runs QEMU with
// Pdeathsig=SIGKILL from a goroutine that keeps its OS thread locked for as
// long as QEMU lives, so QEMU never outlives its owner, and connects to QMP.
// A reaper classifies the end of the machine: a Stop, Kill or guest power-off
// is clean; a kernel panic (a GUEST_PANICKED event or "Kernel panic" on the
// console) wraps errdefs.ErrGuestPanic; anything else wraps
// errdefs.ErrBoxDown with QEMU's exit status and the tail of its stderr.
//
// The machine's directory holds its sockets: qmp.sock (QMP) and agent.sock
// (the guest agent's virtio-serial port org.boxlite.agent), plus
// console.log when the config names no console log.
package qemu
