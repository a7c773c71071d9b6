// Package guest is the guest side of the host↔guest agent: the program that
// runs as /init (PID 1) inside every box's micro-VM.
//
// [Main] sets the VM up (pseudo filesystems, kernel modules, the box root
// disk mounted at /box, hostname, DNS placeholder), finds the transport
// (the virtio-serial port named proto.PortName, and vsock where it exists)
// and serves the gRPC service of package proto on it. It never returns.
//
// [Server] implements proto.AgentServer. It is usable on its own, which is how
// the exec semantics are tested on a host without a VM: with Config.Root ""
// it runs processes without chroot as the current user.
//
// Processes are started with syscall.ForkExec and reaped by the package's own
// reaper, never with os/exec: as PID 1 the agent must reap every orphan with
// wait4(-1), which would steal exit statuses from exec.Cmd.Wait.
//
// The agent is Linux-only; elsewhere [Main] just reports that and exits.
package guest
