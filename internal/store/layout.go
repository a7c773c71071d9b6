package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// Layout names the files under one home directory.
//
//	<home>/boxlite.db             SQLite metadata (see DB)
//	<home>/cache/kernel/          extracted PVH vmlinux files, by content hash
//	<home>/cache/initramfs/       generated initramfs files, by content hash
//	<home>/boxes/<id>/            one box: disks and logs
//	<home>/layers/                shared read-only disk layers (see LayersDir)
//	<home>/boxes/<id>/disk.qcow2  the box's writable overlay
//	<home>/boxes/<id>/console.log the guest's serial console
//	<home>/boxes/<id>/main.log    output of the box's main process, every run
//	<home>/boxes/<id>/main.json   state of the main process's latest run
//	<home>/run/<id>/              sockets of a running box (or a short /tmp
//	                              directory when the home path is too long)
type Layout struct {
	Home string
}

// maxSocketDir keeps "<dir>/agent.sock" under the 107-byte sun_path limit.
const maxSocketDir = 90

// Database is the SQLite metadata database (see DB).
func (l Layout) Database() string { return filepath.Join(l.Home, "boxlite.db") }

func (l Layout) KernelCache() string    { return filepath.Join(l.Home, "cache", "kernel") }
func (l Layout) InitramfsCache() string { return filepath.Join(l.Home, "cache", "initramfs") }
func (l Layout) BoxesDir() string       { return filepath.Join(l.Home, "boxes") }
func (l Layout) BoxDir(id string) string {
	return filepath.Join(l.Home, "boxes", id)
}
func (l Layout) Overlay(id string) string    { return filepath.Join(l.BoxDir(id), "disk.qcow2") }
func (l Layout) ConsoleLog(id string) string { return filepath.Join(l.BoxDir(id), "console.log") }

// NetAuditLog is the box's egress audit log (JSON lines; rotated to
// NetAuditLog+".1").
func (l Layout) NetAuditLog(id string) string {
	return filepath.Join(l.BoxDir(id), "net-audit.jsonl")
}

// MainLog holds the stdout and stderr of a box's main process
// (BoxOptions.MainProcess), interleaved as written; each run appends.
func (l Layout) MainLog(id string) string { return filepath.Join(l.BoxDir(id), "main.log") }

// MainState is the JSON state of the main process's latest run: when it
// started and, once it ended, its exit code (written by the supervisor).
func (l Layout) MainState(id string) string { return filepath.Join(l.BoxDir(id), "main.json") }

// RunDir creates and returns the directory for a running box's sockets.
// When the home path is too long for unix sockets, a directory under the
// system temp dir named after a hash of the home and the id is used.
func (l Layout) RunDir(id string) (string, error) {
	dir := filepath.Join(l.Home, "run", id)
	if len(dir) > maxSocketDir {
		h := sha256.Sum256([]byte(l.Home))
		parent := filepath.Join(os.TempDir(), "boxlite-"+hex.EncodeToString(h[:6]))
		// The shared temp dir is writable by everyone: the parent must
		// be ours, private and a real directory, or another user could
		// own (or have planted) the sockets of our boxes.
		if err := os.Mkdir(parent, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
		if err := checkPrivateDir(parent); err != nil {
			return "", err
		}
		dir = filepath.Join(parent, id)
	}
	return dir, os.MkdirAll(dir, 0o700)
}

// checkPrivateDir fails unless dir is a directory (not a symlink) owned by
// this process's user and closed to everyone else.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("run dir %s: not a directory: %w", dir, errdefs.ErrPermission)
	case !ok || int(st.Uid) != os.Getuid():
		return fmt.Errorf("run dir %s: owned by another user: %w", dir, errdefs.ErrPermission)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("run dir %s: mode %v is open to other users: %w", dir, fi.Mode().Perm(), errdefs.ErrPermission)
	}
	return nil
}
