package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// Tool paths, resolved once per call; missing tools are reported with the
// package that provides them.
var tools = map[string]string{
	"mkfs.ext4": "e2fsprogs",
	"debugfs":   "e2fsprogs",
	"qemu-img":  "qemu-utils",
}

func lookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		// sbin is often missing from an unprivileged PATH.
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			cand := filepath.Join(dir, name)
			if _, serr := os.Stat(cand); serr == nil {
				return cand, nil
			}
		}
		return "", fmt.Errorf("%s not found: install it: apt-get install %s: %w", name, tools[name], errdefs.ErrMissingDependency)
	}
	return p, nil
}

func run(ctx context.Context, name string, args ...string) error {
	bin, err := lookTool(name)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// IsExt4 reports whether the file at path starts with an ext2/3/4
// superblock.
func IsExt4(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1024+0x38); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return binary.LittleEndian.Uint16(magic[:]) == 0xEF53, nil
}

// BaseFromDir writes a sparse ext4 image of sizeBytes at out holding the
// tree at dir, owners and modes kept as they are on the host. out appears
// only when complete (written under a temporary name, then renamed), so
// concurrent builders of the same out are safe.
func BaseFromDir(ctx context.Context, dir, out string, sizeBytes int64) error {
	return baseFromDir(ctx, dir, out, sizeBytes, nil)
}

func baseFromDir(ctx context.Context, dir, out string, sizeBytes int64, owners []Owner) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("rootfs %q: %w", dir, errdefs.ErrNotFound)
	}
	if !st.IsDir() {
		return fmt.Errorf("rootfs %q: not a directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	used, err := treeSize(dir)
	if err != nil {
		return fmt.Errorf("rootfs %q: %w", dir, err)
	}
	if min := used*2 + 64<<20; sizeBytes < min {
		sizeBytes = min
	}
	// A unique temporary name: concurrent builders of one base (other
	// processes included) never write the same file.
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Truncate(sizeBytes)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = run(ctx, "mkfs.ext4", "-q", "-F", "-L", "boxroot",
			"-E", "lazy_itable_init=1,lazy_journal_init=1",
			"-d", dir, tmp)
	}
	if err == nil && len(owners) > 0 {
		err = FixOwners(ctx, tmp, dir, owners)
	}
	if err == nil {
		// Publish without replacing: a concurrent builder of the same out
		// may have won, and boxes may already sit on its file (each
		// mkfs.ext4 run makes a different filesystem).
		err = os.Link(tmp, out)
		if errors.Is(err, fs.ErrExist) {
			err = nil
		}
	}
	os.Remove(tmp)
	if err != nil {
		return fmt.Errorf("rootfs %q: make ext4: %w", dir, err)
	}
	return nil
}

func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if info, err := d.Info(); err == nil {
			n += info.Size() + 4096
		}
		return nil
	})
	return n, err
}

// Overlay creates a qcow2 image at out whose reads fall through to backing
// (format "raw" or "qcow2") and whose writes stay in out. A sizeBytes
// larger than the backing file grows the virtual disk.
func Overlay(ctx context.Context, backing, backingFormat, out string, sizeBytes int64) error {
	abs, err := filepath.Abs(backing)
	if err != nil {
		return err
	}
	args := []string{"create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
		"-b", abs, "-F", backingFormat, out}
	if sizeBytes > 0 {
		args = append(args, fmt.Sprint(sizeBytes))
	}
	if err := run(ctx, "qemu-img", args...); err != nil {
		os.Remove(out)
		return fmt.Errorf("overlay on %q: %w", backing, err)
	}
	return nil
}

// Flatten writes at out a qcow2 holding everything src's chain has above
// backing (format backingFormat), with backing as its backing file; with
// backing "" the result is standalone. It copies src (the top of the
// chain) and rebases the copy onto backing in qemu-img's safe mode, which
// pulls in every cluster the layers in between hold: the cost is the data
// written, not the disk's size. (qemu-img convert -B would copy only the
// top layer's clusters.) A standalone result is a plain convert. out
// appears only when complete.
func Flatten(ctx context.Context, src, out, backing, backingFormat string) error {
	tmp := out + ".tmp"
	if backing == "" {
		// Standalone: convert walks the chain's allocation map and skips
		// unallocated and zero clusters (a sparse base costs nothing).
		err := run(ctx, "qemu-img", "convert", "-q", "-O", "qcow2", "-o", "cluster_size=65536", src, tmp)
		if err == nil {
			err = os.Rename(tmp, out)
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("flatten %q: %w", src, err)
		}
		return nil
	}
	err := copyFile(src, tmp)
	if err == nil {
		args := []string{"rebase", "-q", "-f", "qcow2", "-b", ""}
		if backing != "" {
			abs, aerr := filepath.Abs(backing)
			if aerr != nil {
				return aerr
			}
			args = []string{"rebase", "-q", "-f", "qcow2", "-b", abs, "-F", backingFormat}
		}
		err = run(ctx, "qemu-img", append(args, tmp)...)
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("flatten %q: %w", src, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// OverlayInUse is Overlay for a backing file a running VM holds open (and
// locked): the backing is not opened, so the virtual size must be given.
func OverlayInUse(ctx context.Context, backing, backingFormat, out string, sizeBytes int64) error {
	abs, err := filepath.Abs(backing)
	if err != nil {
		return err
	}
	if err := run(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
		"-u", "-b", abs, "-F", backingFormat, out, fmt.Sprint(sizeBytes)); err != nil {
		os.Remove(out)
		return fmt.Errorf("overlay on %q: %w", backing, err)
	}
	return nil
}

// VirtualSize is the size of the disk image at path as the guest sees it;
// it reads images a running VM holds too.
func VirtualSize(ctx context.Context, path string) (int64, error) {
	bin, err := lookTool("qemu-img")
	if err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, bin, "info", "-U", "--output=json", path).Output()
	if err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	return info.VirtualSize, nil
}
