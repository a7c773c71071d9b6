package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair. Inside a box (root != "") it uses
// the box's own devpts instance (root/dev/pts/ptmx), so the terminal is the
// one the box's processes see at /dev/pts/N; otherwise /dev/ptmx.
//
// The master stays non-blocking (pollable), so reads can be interrupted with
// deadlines; creack/pty is not used because its ioctls call Fd(), which
// switches the master to blocking mode.
func openPTY(root string) (master, tty *os.File, err error) {
	ptmx, pts := "/dev/ptmx", "/dev/pts"
	if root != "" {
		if _, err := os.Stat(filepath.Join(root, "dev/pts/ptmx")); err == nil {
			ptmx, pts = filepath.Join(root, "dev/pts/ptmx"), filepath.Join(root, "dev/pts")
		}
	}
	master, err = os.OpenFile(ptmx, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	var n int
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	tty, err = os.OpenFile(filepath.Join(pts, strconv.Itoa(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	return master, tty, nil
}

// setWinsize sets the terminal size of the pty whose master is f.
func setWinsize(f *os.File, rows, cols uint32) error {
	ws := &unix.Winsize{Row: uint16(min(rows, 0xffff)), Col: uint16(min(cols, 0xffff))}
	return control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws)
	})
}

// control runs fn on f's descriptor without switching it to blocking mode.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
