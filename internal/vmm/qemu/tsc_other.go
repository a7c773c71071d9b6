//go:build !amd64

package qemu

// rdtsc is not available outside amd64.
func rdtsc() uint64 { return 0 }

// tscSupported tells whether this architecture can measure a TSC.
const tscSupported = false
