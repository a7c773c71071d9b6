// Package kernel locates the guest kernel a box boots and turns it into
// the form QEMU loads fastest.
//
// A kernel is found by [Locate]: an explicit path, else $BOXLITE_KERNEL,
// else the newest Debian cloud kernel in /boot (package
// linux-image-cloud-amd64). Its modules live in /lib/modules/<release>
// ($BOXLITE_KERNEL_MODULES overrides); the initramfs package copies the
// ones the guest needs.
//
// Debian ships the kernel as a compressed bzImage. QEMU boots an
// uncompressed ELF vmlinux directly through its PVH entry point, which
// skips the real-mode setup and the in-guest decompression (slow under
// TCG). [ExtractVmlinux] does what scripts/extract-vmlinux does, in Go:
// it reads the x86 boot protocol header, decompresses the payload (LZ4
// legacy frames, gzip, bzip2) and checks that the result is an x86-64 ELF
// with a PVH entry note. [Prepare] caches the result by content hash.
package kernel
