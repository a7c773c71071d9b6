//go:build linux || darwin || freebsd

package archive

import "golang.org/x/sys/unix"

// freeSpace returns the bytes available to an unprivileged user in the file
// system holding dir; ok is false when it cannot tell.
func freeSpace(dir string) (free uint64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true
}
