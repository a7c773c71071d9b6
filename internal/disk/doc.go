// Package disk makes the block devices of a box: a read-only base ext4 image
// (built from a host directory with mkfs.ext4 -d, or given as a file) and a
// per-box qcow2 overlay on top of it, so the base is never written and each
// box keeps its own changes across stop and start.
package disk
