package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// Environment variables read by [Locate].
const (
	// EnvKernel names the kernel image (bzImage or PVH vmlinux) to boot.
	EnvKernel = "BOXLITE_KERNEL"
	// EnvKernelModules names the directory holding the kernel's modules
	// (the one with modules.dep in it).
	EnvKernelModules = "BOXLITE_KERNEL_MODULES"
)

// InstallHint is the command that installs the default guest kernel.
const InstallHint = "apt-get install linux-image-cloud-amd64"

// Kernel is a guest kernel on the host.
type Kernel struct {
	// Path is the kernel image, normally a compressed bzImage.
	Path string
	// Release is the kernel release, e.g. "6.1.0-57-cloud-amd64"; empty if
	// it could not be determined.
	Release string
	// ModulesDir is /lib/modules/<Release> or $BOXLITE_KERNEL_MODULES. It
	// is not checked: a kernel with everything built in needs no modules,
	// and the initramfs builder reports a missing directory itself.
	ModulesDir string
}

// Locate finds the guest kernel. It tries, in order: explicit (if not
// empty), $BOXLITE_KERNEL, the newest /boot/vmlinuz-*-cloud-amd64, and the
// newest /boot/vmlinuz-*. A path that was named but does not exist, or no
// kernel at all, is an error wrapping [errdefs.ErrMissingDependency].
func Locate(explicit string) (Kernel, error) {
	return locate(os.Getenv, "/boot", "/lib/modules", explicit)
}

// locate is Locate with the environment and the /boot and /lib/modules
// roots as parameters, for tests.
func locate(getenv func(string) string, bootDir, modulesRoot, explicit string) (Kernel, error) {
	var path string
	switch {
	case explicit != "":
		if err := checkKernelFile(explicit); err != nil {
			return Kernel{}, fmt.Errorf("guest kernel %q: %w", explicit, err)
		}
		path = explicit
	case getenv(EnvKernel) != "":
		p := getenv(EnvKernel)
		if err := checkKernelFile(p); err != nil {
			return Kernel{}, fmt.Errorf("guest kernel %q (from $%s): %w", p, EnvKernel, err)
		}
		path = p
	default:
		p, err := newestKernel(bootDir)
		if err != nil {
			return Kernel{}, err
		}
		path = p
	}

	k := Kernel{Path: path}
	if rel, ok := strings.CutPrefix(filepath.Base(path), "vmlinuz-"); ok && rel != "" {
		k.Release = rel
	} else {
		k.Release = releaseFromImage(path)
	}
	switch {
	case getenv(EnvKernelModules) != "":
		k.ModulesDir = getenv(EnvKernelModules)
	case k.Release != "":
		k.ModulesDir = filepath.Join(modulesRoot, k.Release)
	}
	return k, nil
}

// checkKernelFile reports why p cannot be a kernel image, if it cannot.
func checkKernelFile(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("%w: no such file (install the default kernel with %q or point $%s at one)",
				errdefs.ErrMissingDependency, InstallHint, EnvKernel)
		}
		return fmt.Errorf("%w: %v", errdefs.ErrMissingDependency, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file", errdefs.ErrMissingDependency)
	}
	return nil
}

// newestKernel returns the /boot/vmlinuz-*-cloud-amd64 with the highest
// version, else the highest /boot/vmlinuz-*.
func newestKernel(bootDir string) (string, error) {
	for _, pattern := range []string{"vmlinuz-*-cloud-amd64", "vmlinuz-*"} {
		matches, err := filepath.Glob(filepath.Join(bootDir, pattern))
		if err != nil {
			return "", err
		}
		var found []string
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.Mode().IsRegular() {
				found = append(found, m)
			}
		}
		if len(found) == 0 {
			continue
		}
		sort.Slice(found, func(i, j int) bool {
			return compareVersions(filepath.Base(found[i]), filepath.Base(found[j])) < 0
		})
		return found[len(found)-1], nil
	}
	return "", fmt.Errorf("guest kernel: no %s/vmlinuz-* found and $%s not set: %w (install one with %q)",
		bootDir, EnvKernel, errdefs.ErrMissingDependency, InstallHint)
}

// compareVersions orders strings like "sort -V": runs of digits compare
// numerically, everything else byte-wise.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := splitRun(a, true)
			nb, rb := splitRun(b, true)
			na, nb = strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if len(na) != len(nb) {
				return cmpInt(len(na), len(nb))
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if da != db {
			// A digit run sorts after any other text.
			if da {
				return 1
			}
			return -1
		}
		sa, ra := splitRun(a, false)
		sb, rb := splitRun(b, false)
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
		a, b = ra, rb
	}
	return cmpInt(len(a), len(b))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// splitRun splits s after its leading run of digits (digits true) or
// non-digits (digits false).
func splitRun(s string, digits bool) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return s[:i], s[i:]
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// releaseFromImage reads the kernel release from a bzImage's
// kernel_version string ("6.1.0-57-cloud-amd64 (debian-kernel@...) #1 ...").
// It returns "" when path is not a bzImage or has no such string.
func releaseFromImage(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil || string(hdr[0x202:0x206]) != "HdrS" {
		return ""
	}
	off := binary.LittleEndian.Uint16(hdr[0x20e:])
	if off == 0 {
		return ""
	}
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, int64(off)+0x200)
	buf = buf[:n]
	if i := bytes.IndexAny(buf, " \x00"); i >= 0 {
		buf = buf[:i]
	}
	return string(buf)
}
