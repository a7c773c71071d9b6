package disk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// Owner is the metadata one path of a tree must have in the ext4 image,
// whatever the file on disk says: an unprivileged process cannot chown
// files or create device nodes, so a tree it unpacked records its true
// owners here instead.
type Owner struct {
	// Path is slash-separated and relative to the tree's root.
	Path string
	// Mode holds the type (fs.ModeDir, fs.ModeSymlink, fs.ModeDevice,
	// fs.ModeCharDevice, fs.ModeNamedPipe; none for a regular file) and
	// the permission, setuid, setgid and sticky bits.
	Mode     fs.FileMode
	UID, GID int
	// Major and Minor number a device node.
	Major, Minor uint32
}

// BaseFromTree is BaseFromDir with the owners, modes and device nodes of
// the paths in owners taken from owners rather than from the files on
// disk: after mkfs.ext4 -d, the paths that differ are corrected in the
// image with one debugfs run (see FixOwners), before the image appears
// at out.
func BaseFromTree(ctx context.Context, dir, out string, sizeBytes int64, owners []Owner) error {
	return baseFromDir(ctx, dir, out, sizeBytes, owners)
}

// FixOwners corrects the ext4 image at image, built by mkfs.ext4 -d from
// the tree at dir, so that every path in owners has the owner, group and
// mode it gives, and creates the device nodes the tree lacks. Only the
// paths whose metadata on disk differs are touched, all in one debugfs
// run; none at all (the common case as root) runs nothing.
func FixOwners(ctx context.Context, image, dir string, owners []Owner) error {
	script, n, err := fixScript(dir, owners)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return runDebugfs(ctx, image, script)
}

// fixScript returns the debugfs commands that make the image built from
// dir match owners, and how many paths they change.
func fixScript(dir string, owners []Owner) ([]byte, int, error) {
	var b bytes.Buffer
	n := 0
	for _, o := range owners {
		p, err := cleanPath(o.Path)
		if err != nil {
			return nil, 0, err
		}
		want := inodeMode(o.Mode)
		var st unix.Stat_t
		err = unix.Lstat(filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(p, "/"))), &st)
		switch {
		case errors.Is(err, unix.ENOENT):
			if o.Mode&fs.ModeDevice == 0 && o.Mode&fs.ModeNamedPipe == 0 {
				return nil, 0, fmt.Errorf("owner of %q: not in the tree: %w", p, errdefs.ErrInvalidArgument)
			}
			// A device node an unprivileged unpack could not create:
			// debugfs mknod links a bare name into the current directory.
			kind := "p"
			switch {
			case o.Mode&fs.ModeCharDevice != 0:
				kind = "c"
			case o.Mode&fs.ModeDevice != 0:
				kind = "b"
			}
			fmt.Fprintf(&b, "cd %s\n", quote(path.Dir(p)))
			if kind == "p" {
				fmt.Fprintf(&b, "mknod %s p\n", quote(path.Base(p)))
			} else {
				fmt.Fprintf(&b, "mknod %s %s %d %d\n", quote(path.Base(p)), kind, o.Major, o.Minor)
			}
			fmt.Fprintf(&b, "cd /\n")
			fmt.Fprintf(&b, "set_inode_field %s mode 0%o\n", quote(p), want)
			fmt.Fprintf(&b, "set_inode_field %s uid %d\n", quote(p), o.UID)
			fmt.Fprintf(&b, "set_inode_field %s gid %d\n", quote(p), o.GID)
			n++
			continue
		case err != nil:
			return nil, 0, fmt.Errorf("owner of %q: %w", p, err)
		}
		if st.Mode&unix.S_IFMT != want&unix.S_IFMT {
			return nil, 0, fmt.Errorf("owner of %q: type %o in the tree, want %o: %w", p, st.Mode&unix.S_IFMT, want&unix.S_IFMT, errdefs.ErrInvalidArgument)
		}
		if want&unix.S_IFMT == unix.S_IFCHR || want&unix.S_IFMT == unix.S_IFBLK {
			if unix.Major(st.Rdev) != o.Major || unix.Minor(st.Rdev) != o.Minor {
				return nil, 0, fmt.Errorf("owner of %q: device %d:%d in the tree, want %d:%d: %w",
					p, unix.Major(st.Rdev), unix.Minor(st.Rdev), o.Major, o.Minor, errdefs.ErrInvalidArgument)
			}
		}
		changed := false
		// Symlink permissions mean nothing on Linux (always 0777).
		if want&unix.S_IFMT != unix.S_IFLNK && st.Mode != want {
			fmt.Fprintf(&b, "set_inode_field %s mode 0%o\n", quote(p), want)
			changed = true
		}
		if int(st.Uid) != o.UID {
			fmt.Fprintf(&b, "set_inode_field %s uid %d\n", quote(p), o.UID)
			changed = true
		}
		if int(st.Gid) != o.GID {
			fmt.Fprintf(&b, "set_inode_field %s gid %d\n", quote(p), o.GID)
			changed = true
		}
		if changed {
			n++
		}
	}
	return b.Bytes(), n, nil
}

// cleanPath turns a tree-relative slash path into the absolute path
// debugfs resolves, refusing what it cannot express or what leaves the
// root.
func cleanPath(p string) (string, error) {
	if strings.ContainsAny(p, "\n\r\x00") {
		return "", fmt.Errorf("path %q: debugfs cannot express a name with a newline, carriage return or NUL: %w", p, errdefs.ErrInvalidArgument)
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return "", fmt.Errorf("path %q: parent directory reference: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return path.Clean("/" + p), nil
}

// quote makes one debugfs argument (libss parsing): inside double quotes
// every character is literal and a doubled quote is one quote.
func quote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// inodeMode converts an fs.FileMode to an ext4 i_mode.
func inodeMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	switch {
	case m&fs.ModeDir != 0:
		mode |= unix.S_IFDIR
	case m&fs.ModeSymlink != 0:
		mode |= unix.S_IFLNK
	case m&fs.ModeCharDevice != 0:
		mode |= unix.S_IFCHR
	case m&fs.ModeDevice != 0:
		mode |= unix.S_IFBLK
	case m&fs.ModeNamedPipe != 0:
		mode |= unix.S_IFIFO
	case m&fs.ModeSocket != 0:
		mode |= unix.S_IFSOCK
	default:
		mode |= unix.S_IFREG
	}
	return mode
}

// runDebugfs applies script to image. debugfs exits 0 whatever its
// commands do and reports their failures on stderr, so any stderr line
// but its version banner is an error.
func runDebugfs(ctx context.Context, image string, script []byte) error {
	bin, err := lookTool("debugfs")
	if err != nil {
		return err
	}
	cmdFile, err := os.CreateTemp(filepath.Dir(image), ".debugfs-*.cmd")
	if err != nil {
		return err
	}
	defer os.Remove(cmdFile.Name())
	_, err = cmdFile.Write(script)
	if cerr := cmdFile.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "-w", "-f", cmdFile.Name(), image)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var errs []string
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "debugfs ") {
			errs = append(errs, line)
		}
	}
	if len(errs) > 0 {
		if len(errs) > 5 {
			errs = append(errs[:5], fmt.Sprintf("... (%d more)", len(errs)-5))
		}
		return fmt.Errorf("debugfs: %s", strings.Join(errs, "; "))
	}
	return nil
}
