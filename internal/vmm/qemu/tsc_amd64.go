package qemu

// rdtsc reads the CPU's time stamp counter, after an LFENCE so that
// earlier instructions have completed.
func rdtsc() uint64

// tscSupported tells whether this architecture can measure a TSC.
const tscSupported = true
