package guest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxSymlinks bounds symlink resolution, like the kernel's ELOOP limit.
const maxSymlinks = 40

// resolveInRoot returns the host path of p (an absolute path inside the box)
// with every symlink resolved as if root were "/": an absolute link target
// restarts at root and ".." never climbs above it. This is what the box's
// processes see after chroot, while the agent itself does not chroot.
// With root "" (no box) p is returned cleaned. The final path must exist.
func resolveInRoot(root, p string) (string, error) {
	if root == "" {
		p = filepath.Clean(p)
		if _, err := os.Lstat(p); err != nil {
			return "", err
		}
		return p, nil
	}
	resolved := "/"
	rest := p
	links := 0
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, "/")
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			if errors.Is(err, syscall.ENOTDIR) {
				err = fs.ErrNotExist
			}
			return "", &fs.PathError{Op: "resolve", Path: p, Err: unwrapPathError(err)}
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxSymlinks {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: syscall.ELOOP}
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = target + "/" + rest
	}
	return filepath.Join(root, resolved), nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// errNotExecutable means a program was found but lacks the execute bit.
var errNotExecutable = errors.New("permission denied")

// errNotInPath means a program name was not found in any PATH directory.
var errNotInPath = errors.New("executable file not found in $PATH")
