// Package boxlite runs OCI images and root filesystems inside
// hardware-isolated micro-VMs — boxes — each with its own kernel.
//
//	rt, err := boxlite.NewRuntime(boxlite.Options{HomeDir: dir})
//	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: "/path/to/rootfs"}, "name")
//	err = box.Start(ctx)
//	ex, err := box.Exec(ctx, boxlite.Command{Name: "sh", Args: []string{"-c", "echo hi"}})
//	out, _ := io.ReadAll(ex.Stdout())
//	res, err := ex.Wait(ctx) // res.ExitCode
//	err = box.Stop(ctx)
//	err = rt.Shutdown(ctx)
//
// Each box is one QEMU process (KVM when /dev/kvm is usable, software
// emulation otherwise) booting a Debian cloud kernel whose initramfs holds
// the guest agent, cmd/boxlite-agent. The host talks to the agent over a
// virtio-serial port with gRPC.
//
// Errors are sentinels tested with errors.Is: ErrNotFound,
// ErrInvalidArgument, ErrInvalidState, ErrMissingDependency, ErrUnknownUser,
// ErrBoxDown, ErrGuestPanic, ...
package boxlite
