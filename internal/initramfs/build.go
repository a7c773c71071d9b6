package initramfs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// cacheVersion is hashed into every cache key; bump it when the archive
// layout changes so that stale archives are not reused.
const cacheVersion = "boxlite-initramfs-v2"

// BuildOptions describes an initramfs.
type BuildOptions struct {
	// AgentPath is the static guest agent binary; it becomes /init.
	AgentPath string
	// ModulesDir is the kernel's module directory (/lib/modules/<release>).
	// Empty means a kernel with everything built in: no modules.
	ModulesDir string
	// Modules are the module names to include, dependencies added; nil
	// means DefaultModules (an empty non-nil slice means none).
	Modules []string
	// LateModules are loaded after the agent serves; nil means
	// DefaultLateModules when Modules is nil too, else none.
	LateModules []string
	// CacheDir receives the archive.
	CacheDir string
}

// Build returns the path of the initramfs described by o, building it in
// o.CacheDir unless an identical one is there. The file is named after a
// sha256 of the agent, the module list and the modules' names and
// contents: initramfs-<16 hex digits>.cpio. It is written to a temporary
// file renamed into place, so concurrent builds are safe and an
// interrupted one leaves nothing behind. A missing agent or modules
// directory is an error wrapping [errdefs.ErrMissingDependency].
func Build(ctx context.Context, o BuildOptions) (path string, err error) {
	if o.CacheDir == "" {
		return "", fmt.Errorf("initramfs: %w: no cache directory", errdefs.ErrInvalidArgument)
	}
	agent, err := os.ReadFile(o.AgentPath)
	if err != nil {
		return "", fmt.Errorf("initramfs: guest agent %q: %w: %v (build it with: CGO_ENABLED=0 go build -o %s ./cmd/boxlite-agent)",
			o.AgentPath, errdefs.ErrMissingDependency, err, o.AgentPath)
	}
	mods, list, err := readModules(ctx, o)
	if err != nil {
		return "", err
	}

	h := sha256.New()
	hashField(h, []byte(cacheVersion))
	hashField(h, agent)
	hashField(h, []byte(list))
	for _, m := range mods {
		hashField(h, []byte(m.name))
		hashField(h, m.data)
	}
	dst := filepath.Join(o.CacheDir, "initramfs-"+hex.EncodeToString(h.Sum(nil))[:16]+".cpio")
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		return dst, nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := writeAtomic(dst, func(f *os.File) error { return writeArchive(f, agent, mods, list) }); err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	return dst, nil
}

// module is one kernel module file bound for /lib/modules.
type module struct {
	name string // file name, e.g. "virtio_blk.ko"
	data []byte
}

// group is one line of /etc/boxlite/modules: a requested module after its
// dependencies (file names), loaded only when a device matches one of its
// when patterns, if it has any.
type group struct {
	files []string
	when  []string
}

// line renders g in the module list's syntax:
// "dep.ko ... mod.ko [when pattern ...]".
func (g group) line() string {
	s := strings.Join(g.files, " ")
	if len(g.when) > 0 {
		s += " " + WhenMarker + " " + strings.Join(g.when, " ")
	}
	return s
}

// readModules resolves and reads the modules of o: every file once, and
// the module list in load order.
func readModules(ctx context.Context, o BuildOptions) ([]module, string, error) {
	names, late := o.Modules, o.LateModules
	if names == nil && late == nil {
		late = DefaultLateModules
	}
	if o.ModulesDir == "" {
		if len(names) > 0 || len(o.LateModules) > 0 {
			return nil, "", fmt.Errorf("initramfs: %w: modules %v requested without a modules directory", errdefs.ErrInvalidArgument, names)
		}
		return nil, "", nil
	}
	if names == nil {
		names = DefaultModules
	}
	if len(names) == 0 && len(late) == 0 {
		return nil, "", nil
	}
	if fi, err := os.Stat(o.ModulesDir); err != nil || !fi.IsDir() {
		return nil, "", fmt.Errorf("initramfs: kernel modules directory %q: %w (install the kernel and its modules with %q)",
			o.ModulesDir, errdefs.ErrMissingDependency, "apt-get install linux-image-cloud-amd64")
	}
	early, err := moduleGroups(o.ModulesDir, names)
	if err != nil {
		return nil, "", fmt.Errorf("initramfs: %w", err)
	}
	lateGroups, err := moduleGroups(o.ModulesDir, late)
	if err != nil {
		return nil, "", fmt.Errorf("initramfs: %w", err)
	}

	var list strings.Builder
	var mods []module
	seen := map[string]string{} // file name -> path
	for i, g := range slices.Concat(early, lateGroups) {
		if i == len(early) && len(lateGroups) > 0 {
			list.WriteString(LateMarker + "\n")
		}
		var files []string
		for _, p := range g.files {
			if err := ctx.Err(); err != nil {
				return nil, "", err
			}
			name := filepath.Base(p)
			files = append(files, name)
			if other, dup := seen[name]; dup {
				if other != p {
					return nil, "", fmt.Errorf("initramfs: modules %s and %s share the file name %s", other, p, name)
				}
				continue
			}
			seen[name] = p
			if !filepath.IsAbs(p) {
				p = filepath.Join(o.ModulesDir, p)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, "", fmt.Errorf("initramfs: kernel module: %w", err)
			}
			mods = append(mods, module{name: name, data: data})
		}
		list.WriteString(group{files: files, when: g.when}.line() + "\n")
	}
	return mods, list.String(), nil
}

// hashField adds a length-prefixed field, so that field boundaries are
// part of the hash.
func hashField(h hash.Hash, b []byte) {
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
	h.Write(b)
}

// archiveDirs are created in this order, parents first.
var archiveDirs = []struct {
	name string
	mode os.FileMode
}{
	{"dev", 0o755},
	{"proc", 0o555},
	{"sys", 0o555},
	{"tmp", 0o777 | os.ModeSticky},
	{"run", 0o755},
	{"box", 0o755},
	{"etc", 0o755},
	{"etc/boxlite", 0o755},
	{"lib", 0o755},
	{"lib/modules", 0o755},
}

// writeArchive writes the initramfs to f.
func writeArchive(f *os.File, agent []byte, mods []module, list string) error {
	bw := bufio.NewWriterSize(f, 1<<20)
	w := NewWriter(bw)
	for _, d := range archiveDirs {
		if err := w.Dir(d.name, d.mode); err != nil {
			return err
		}
	}
	if err := w.CharDevice("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	for _, m := range mods {
		if err := w.File("lib/modules/"+m.name, 0o644, m.data); err != nil {
			return err
		}
	}
	if err := w.File("etc/boxlite/modules", 0o644, []byte(list)); err != nil {
		return err
	}
	if err := w.File("init", 0o755, agent); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// writeAtomic creates dst by writing a temporary file in its directory
// with write and renaming it.
func writeAtomic(dst string, write func(*os.File) error) (err error) {
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
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
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
