package guest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// boxFS opens paths inside the box the way the box's processes see them
// after chroot. With a root it uses openat2(RESOLVE_IN_ROOT) on a handle of
// the root directory: the kernel resolves the whole path in one call, where
// a walk needs an lstat per component, and under software emulation every
// system call counts on the exec path. Kernels without openat2 (before 5.6)
// fall back to resolveInRoot.
type boxFS struct {
	root string // "" means no box: paths are the agent's own
	fd   int    // root directory (O_PATH), or -1

	passwd accountCache[passwdEntry]
	group  accountCache[groupEntry]
}

// noOpenat2 is set once openat2 has failed with ENOSYS.
var noOpenat2 atomic.Bool

// newBoxFS returns a boxFS for root. If the root cannot be opened now, paths
// are resolved by walking them.
func newBoxFS(root string) *boxFS {
	b := &boxFS{root: root, fd: -1}
	b.passwd.parse, b.group.parse = parsePasswd, parseGroup
	if root != "" {
		if fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			b.fd = fd
		}
	}
	return b
}

// open opens p, an absolute path inside the box, with flags (O_CLOEXEC is
// added). The caller closes the descriptor.
func (b *boxFS) open(p string, flags int) (int, error) {
	flags |= unix.O_CLOEXEC
	if b.root == "" {
		return ignoringEINTR(func() (int, error) { return unix.Open(filepath.Clean(p), flags, 0) })
	}
	if b.fd >= 0 && !noOpenat2.Load() {
		how := &unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
		// EAGAIN means a rename or mount raced with the lookup. A box
		// renaming in a loop must not keep the agent here: after a few
		// tries the walk below decides.
		for range 8 {
			fd, err := unix.Openat2(b.fd, p, how)
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if err == unix.ENOSYS {
				noOpenat2.Store(true)
				break
			}
			return fd, err
		}
	}
	hostPath, err := resolveInRoot(b.root, p)
	if err != nil {
		return -1, unwrapPathError(err)
	}
	return ignoringEINTR(func() (int, error) { return unix.Open(hostPath, flags, 0) })
}

// stat returns the status of p inside the box (symlinks followed).
func (b *boxFS) stat(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := b.open(p, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	return st, unix.Fstat(fd, &st)
}

// isDir reports whether p is a directory inside the box.
func (b *boxFS) isDir(p string) bool {
	st, err := b.stat(p)
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// lookPath finds the program name (without '/') in the PATH directories
// inside the box and returns its path as the box sees it. A regular file
// without an execute bit is skipped, but reported (errNotExecutable) when
// nothing better is found.
func (b *boxFS) lookPath(name, path string) (string, error) {
	sawNonExec := false
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) { // "" and relative entries mean the cwd: not for an agent
			continue
		}
		candidate := filepath.Join(dir, name)
		st, err := b.stat(candidate)
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		if st.Mode&0o111 == 0 {
			sawNonExec = true
			continue
		}
		return candidate, nil
	}
	if sawNonExec {
		return "", fmt.Errorf("%q: %w", name, errNotExecutable)
	}
	return "", fmt.Errorf("%q: %w", name, errNotInPath)
}

// accountCache holds the parsed entries of one account file (/etc/passwd
// or /etc/group), reused while the file is unchanged.
type accountCache[T any] struct {
	parse func(r io.Reader) ([]T, error)

	mu      sync.Mutex
	key     fileKey
	entries []T
}

// fileKey identifies one version of a file: any write changes mtime or
// ctime, a replacement changes the inode.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

// racyWindow is how old a file's last change must be before its entries
// are cached. File times have a coarse clock, so a second write within one
// tick of the first could leave the key unchanged (git's "racy clean"
// problem); a file changed that recently is parsed every time.
var racyWindow = 2 * time.Second

// maxAccountFile bounds an account file the agent reads (a box could
// otherwise make the agent read a huge file on every exec).
const maxAccountFile = 16 << 20

// read returns the entries of file p inside b; a missing file has none.
func (c *accountCache[T]) read(b *boxFS, p string) ([]T, error) {
	fd, err := b.open(p, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &fs.PathError{Op: "read", Path: p, Err: errors.New("not a regular file")}
	}
	key := fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key == key && c.entries != nil {
		return c.entries, nil
	}
	if st.Size > maxAccountFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", p, maxAccountFile)
	}
	entries, err := c.parse(&fdReader{fd: fd})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	c.key, c.entries = fileKey{}, nil
	if time.Since(time.Unix(st.Ctim.Unix())) > racyWindow && time.Since(time.Unix(st.Mtim.Unix())) > racyWindow {
		c.key, c.entries = key, entries
		if entries == nil {
			c.entries = []T{} // cached, though empty
		}
	}
	return entries, nil
}

// fdReader reads a raw descriptor.
type fdReader struct{ fd int }

func (r *fdReader) Read(p []byte) (int, error) {
	n, err := ignoringEINTR(func() (int, error) { return unix.Read(r.fd, p) })
	switch {
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}
