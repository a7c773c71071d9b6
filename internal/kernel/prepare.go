package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Prepare returns the path of k's uncompressed PVH vmlinux, extracting it
// into cacheDir on first use. The cache entry is named after the bzImage's
// content (vmlinux-<first 16 hex digits of its sha256>) and written to a
// temporary file renamed into place, so concurrent callers are safe and an
// interrupted write leaves no entry behind.
func Prepare(ctx context.Context, k Kernel, cacheDir string) (vmlinuxPath string, err error) {
	img, err := os.ReadFile(k.Path)
	if err != nil {
		return "", fmt.Errorf("guest kernel %q: %w", k.Path, err)
	}
	sum := sha256.Sum256(img)
	dst := filepath.Join(cacheDir, "vmlinux-"+hex.EncodeToString(sum[:])[:16])
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		return dst, nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	vmlinux, err := ExtractVmlinux(img)
	if err != nil {
		return "", fmt.Errorf("guest kernel %q: %w", k.Path, err)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := writeFileAtomic(dst, vmlinux, 0o644); err != nil {
		return "", fmt.Errorf("guest kernel %q: cache vmlinux: %w", k.Path, err)
	}
	return dst, nil
}

// writeFileAtomic writes data to a temporary file in dst's directory and
// renames it to dst.
func writeFileAtomic(dst string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}
