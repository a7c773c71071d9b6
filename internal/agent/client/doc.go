// Package client is the host side of the guest agent protocol: it dials the
// agent over a byte stream supplied by the VMM, performs the version
// handshake, and runs processes with streamed stdio.
//
// Output of a process is drained as it arrives into buffers that spill to an
// unlinked temporary file past 8 MiB of unread data, so a
// caller that never reads Stdout or Stderr cannot stall the guest, and Wait
// never deadlocks on an unread stream.
package client
