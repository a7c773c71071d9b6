// Package vmm defines what the runtime needs from a virtual machine monitor:
// start a machine from a kernel, an initramfs and disks, reach its guest
// agent, learn when and why it ended, and stop it. The QEMU backend lives in
// vmm/qemu; other monitors (Firecracker, Cloud Hypervisor) can follow behind
// the same interface.
package vmm

import (
	"context"
	"log/slog"
	"net"
)

// Disk is one block device given to the guest, in order: the first is
// /dev/vda.
type Disk struct {
	Path     string
	Format   string // "qcow2" or "raw"
	ReadOnly bool
}

// NIC is the guest's network card. The backend connects it to a user-mode
// network listening on a unix stream socket (QEMU's -netdev stream), or,
// for measurements only, to QEMU's built-in slirp.
type NIC struct {
	// Socket is the unix stream socket of the user-mode network; QEMU
	// connects to it, so it must be listening before Start.
	Socket string `json:"socket,omitempty"`
	// MAC is the card's hardware address.
	MAC string `json:"mac"`
	// Slirp uses QEMU's built-in user networking instead of Socket, with
	// HostForwards as its hostfwd rules ("tcp:127.0.0.1:8080-:80"). It is
	// the benchmarks' baseline, not a product feature.
	Slirp        bool     `json:"slirp,omitempty"`
	HostForwards []string `json:"hostForwards,omitempty"`
}

// Config describes one machine. Zero values mean the documented defaults.
type Config struct {
	// Name identifies the machine in logs and process listings.
	Name string
	// Dir is a private, existing directory for the machine's sockets. Its
	// path must be short: unix socket paths are limited to 107 bytes.
	Dir string
	// Kernel is an uncompressed PVH vmlinux (or a bzImage for q35).
	Kernel string
	// Initrd is the initramfs holding the guest agent as /init.
	Initrd string
	// Cmdline is appended to the backend's tuned kernel command line.
	Cmdline string
	// CPUs defaults to 1, MemoryMiB to 512.
	CPUs      int
	MemoryMiB int
	Disks     []Disk
	// NIC, when set, gives the guest a network card; nil: no NIC at all.
	NIC *NIC
	// ConsoleLog receives the guest's serial console, truncated at each
	// start; "" means console.log in Dir. Kernel panics are recognised
	// there.
	ConsoleLog string
	// Accel is "kvm", "tcg" or "" (auto: kvm when /dev/kvm is usable).
	Accel string
	// TSCKHz is the host's TSC frequency when the caller knows it
	// already; 0 lets the backend measure it where it needs it.
	TSCKHz int
	// Logger receives the backend's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Machine is one running (or ended) virtual machine.
type Machine interface {
	// Start launches the machine and returns once the monitor runs and
	// answers. On error nothing of the machine is left running.
	Start(ctx context.Context) error
	// DialAgent connects to the guest agent's channel. The connection is
	// a plain byte stream; the host must speak first.
	DialAgent(ctx context.Context) (net.Conn, error)
	// PID is the monitor's process id, 0 before Start.
	PID() int
	// Done is closed when the machine has ended and been reaped.
	Done() <-chan struct{}
	// Err tells why the machine ended, once Done is closed: nil after a
	// Stop or a guest power-off, an error wrapping errdefs.ErrGuestPanic
	// after a kernel panic, another error when the monitor died.
	Err() error
	// Stop ends the machine: a monitor quit, then a kill at ctx's
	// deadline. It returns when the process is reaped.
	Stop(ctx context.Context) error
	// Kill ends the machine at once and waits for it to be reaped.
	Kill() error
}
