//go:build !(linux || darwin || freebsd)

package archive

// freeSpace cannot tell on this platform.
func freeSpace(string) (uint64, bool) { return 0, false }
