package initramfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// newc header field values (see the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst).
const (
	newcMagic   = "070701"
	headerSize  = 110 // magic + 13 fields of 8 hex digits
	trailerName = "TRAILER!!!"
	blockSize   = 512 // Close pads the archive to a multiple, like cpio(1)
	maxNameLen  = 4095

	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// Writer writes a newc ("070701") cpio archive. Every entry is owned by
// root, has mtime 0 and an inode number given in order of writing, so the
// same calls produce the same bytes. Names are stored without a leading
// "/". The kernel does not create missing parent directories: write them
// first.
type Writer struct {
	w      io.Writer
	n      int64 // bytes written
	ino    uint32
	names  map[string]bool
	err    error // sticky
	closed bool
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, names: map[string]bool{}}
}

// Dir adds a directory.
func (w *Writer) Dir(name string, mode os.FileMode) error {
	return w.entry(name, modeDir|unixPerm(mode), 2, 0, 0, nil)
}

// File adds a regular file holding data.
func (w *Writer) File(name string, mode os.FileMode, data []byte) error {
	return w.entry(name, modeRegular|unixPerm(mode), 1, 0, 0, data)
}

// Symlink adds a symbolic link to target.
func (w *Writer) Symlink(name, target string) error {
	if target == "" {
		return fmt.Errorf("cpio: symlink %q: empty target", name)
	}
	return w.entry(name, modeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDevice adds a character device node; the kernel creates it while
// unpacking, which is how /init gets a /dev/console before devtmpfs.
func (w *Writer) CharDevice(name string, mode os.FileMode, major, minor uint32) error {
	return w.entry(name, modeCharDev|unixPerm(mode), 1, major, minor, nil)
}

// Close writes the trailer and pads the archive to a multiple of 512
// bytes. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if w.err != nil {
		w.closed = true
		return w.err
	}
	w.writeEntry(trailerName, 0, 0, 1, 0, 0, nil)
	w.closed = true
	if pad := (blockSize - w.n%blockSize) % blockSize; pad > 0 {
		w.write(make([]byte, pad))
	}
	return w.err
}

// unixPerm converts the permission and special bits of an os.FileMode
// to their Unix values.
func unixPerm(m os.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// cleanName turns an absolute or relative slash path into an archive name.
func cleanName(name string) (string, error) {
	c := strings.TrimLeft(path.Clean("/"+name), "/")
	switch {
	case c == "":
		return "", errors.New("empty name")
	case c == trailerName:
		return "", errors.New("reserved name")
	case len(c) > maxNameLen:
		return "", fmt.Errorf("name longer than %d bytes", maxNameLen)
	case strings.ContainsRune(c, 0):
		return "", errors.New("name contains NUL")
	}
	return c, nil
}

func (w *Writer) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if w.closed {
		return fmt.Errorf("cpio: %q: write after Close", name)
	}
	if w.err != nil {
		return w.err
	}
	c, err := cleanName(name)
	if err != nil {
		return fmt.Errorf("cpio: %q: %w", name, err)
	}
	if w.names[c] {
		return fmt.Errorf("cpio: %q: duplicate entry", c)
	}
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %q: %d bytes exceed the newc limit of 4 GiB", c, len(data))
	}
	w.names[c] = true
	w.ino++
	w.writeEntry(c, w.ino, mode, nlink, rmajor, rminor, data)
	return w.err
}

// writeEntry writes a header, the NUL-terminated name padded so that
// header+name is a multiple of 4, and the data padded to 4.
func (w *Writer) writeEntry(name string, ino, mode, nlink, rmajor, rminor uint32, data []byte) {
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		newcMagic,
		ino, mode,
		0, 0, // uid, gid
		nlink,
		0, // mtime
		len(data),
		0, 0, // devmajor, devminor
		rmajor, rminor,
		len(name)+1,
		0) // check
	buf := make([]byte, 0, align4(headerSize+len(name)+1))
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = buf[:cap(buf)] // NUL terminator and padding
	w.write(buf)
	if len(data) > 0 {
		w.write(data)
		w.write(make([]byte, align4(len(data))-len(data)))
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

func (w *Writer) write(b []byte) {
	if w.err != nil || len(b) == 0 {
		return
	}
	n, err := w.w.Write(b)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("cpio: %w", err)
	}
}
