package boxlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/boxlite-go/boxlite/internal/archive"
	"github.com/boxlite-go/boxlite/internal/disk"
)

// ExportOptions tune Box.Export. (None yet; the zero value exports.)
type ExportOptions struct{}

// Archive is an exported box.
type Archive struct {
	// Path is the archive file; it ends in ".boxlite".
	Path string
}

// diskMember is the archive member holding the flattened disk.
const diskMember = "disk.qcow2"

// exportedBox is the box description an archive carries.
type exportedBox struct {
	Options         BoxOptions `json:"options"`
	ImageEntrypoint []string   `json:"imageEntrypoint,omitempty"`
	ImageCmd        []string   `json:"imageCmd,omitempty"`
}

// Export writes the box — its options and its whole disk, flattened — to
// dir/<name or id>.boxlite, a zstd-compressed tar with a manifest of
// sizes and sha256 sums (see internal/archive). A running box is frozen
// the way a live Clone is (paused for a few milliseconds) and keeps
// running while the frozen layer is copied. An existing file is not
// overwritten (ErrAlreadyExists).
func (b *Box) Export(ctx context.Context, opts ExportOptions, dir string) (Archive, error) {
	rt := b.rt
	st, err := os.Stat(dir)
	if err != nil {
		return Archive{}, fmt.Errorf("box %s: export: directory %q: %w", b.label(), dir, ErrNotFound)
	}
	if !st.IsDir() {
		return Archive{}, fmt.Errorf("box %s: export: %q is not a directory: %w", b.label(), dir, ErrInvalidArgument)
	}
	base := b.name
	if base == "" {
		base = b.id
	}
	out := filepath.Join(dir, base+".boxlite")
	if _, err := os.Lstat(out); err == nil {
		return Archive{}, fmt.Errorf("box %s: export: %s: %w", b.label(), out, ErrAlreadyExists)
	}
	if err := os.MkdirAll(rt.layout.TmpDir(), 0o700); err != nil {
		return Archive{}, err
	}
	work, err := os.MkdirTemp(rt.layout.TmpDir(), "export-")
	if err != nil {
		return Archive{}, err
	}
	defer os.RemoveAll(work)
	flat := filepath.Join(work, diskMember)

	// Take the disk: a frozen layer of a running box, the chain of a
	// stopped one (held still by b.mu while it is copied).
	b.mu.Lock()
	desc, err := json.Marshal(exportedBox{Options: b.opts, ImageEntrypoint: b.imageEntrypoint, ImageCmd: b.imageCmd})
	if err != nil {
		b.mu.Unlock()
		return Archive{}, err
	}
	var src string
	switch b.status {
	case StatusRunning:
		if b.machine == nil {
			if err := b.attach(); err != nil {
				b.mu.Unlock()
				return Archive{}, fmt.Errorf("box %s: export: %w", b.label(), err)
			}
		}
		var dropped []string
		src, dropped, err = b.freeze(ctx)
		b.mu.Unlock()
		if err != nil {
			return Archive{}, fmt.Errorf("box %s: export: %w", b.label(), err)
		}
		rt.collectLayers(context.WithoutCancel(ctx), dropped)
		err = disk.Flatten(ctx, src, flat, "", "")
	case StatusStopped, StatusConfigured:
		err = disk.Flatten(ctx, rt.layout.Overlay(b.id), flat, "", "")
		b.mu.Unlock()
	default:
		st := b.status
		b.mu.Unlock()
		return Archive{}, fmt.Errorf("box %s: export: box is %s: %w", b.label(), st, ErrInvalidState)
	}
	if err != nil {
		return Archive{}, fmt.Errorf("box %s: export: %w", b.label(), err)
	}

	tmp, err := os.CreateTemp(dir, "."+base+".boxlite.tmp-")
	if err != nil {
		return Archive{}, err
	}
	defer os.Remove(tmp.Name())
	_, err = archive.Write(ctx, tmp, desc, b.opts.Image, map[string]string{diskMember: flat})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// No replace: a file that appeared meanwhile wins.
		err = os.Link(tmp.Name(), out)
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%s: %w", out, ErrAlreadyExists)
		}
	}
	if err != nil {
		return Archive{}, fmt.Errorf("box %s: export: %w", b.label(), err)
	}
	rt.log.Info("box exported", "box", b.id, "archive", out)
	return Archive{Path: out}, nil
}

// Import creates a box, in StatusStopped, from an archive Export wrote.
// Everything is checked before anything is created — format, version,
// member names, sizes, sha256 sums, and that the disk is a standalone
// qcow2 (no backing or data file that could reach host files) — and a
// failed import leaves no box, row or file.
func (rt *Runtime) Import(ctx context.Context, path, name string) (*Box, error) {
	if name != "" && !validName(name) {
		return nil, fmt.Errorf("box name %q: use letters, digits, '-', '_' and '.': %w", name, ErrInvalidArgument)
	}
	if name != "" {
		if rec, err := rt.db.GetBox(ctx, name); err == nil && rec.Name == name {
			return nil, fmt.Errorf("box name %q: %w", name, ErrAlreadyExists)
		}
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("import %q: %w", path, ErrNotFound)
	}
	if err := os.MkdirAll(rt.layout.TmpDir(), 0o700); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(rt.layout.TmpDir(), "import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	man, err := archive.Read(ctx, path, work, archive.Limits{})
	if err != nil {
		return nil, fmt.Errorf("import %q: %w", path, err)
	}
	if len(man.Members) != 1 || man.Members[0].Name != diskMember {
		return nil, fmt.Errorf("import %q: want exactly the member %s: %w", path, diskMember, archive.ErrBadArchive)
	}
	var desc exportedBox
	if err := json.Unmarshal(man.Box, &desc); err != nil {
		return nil, fmt.Errorf("import %q: box description: %v: %w", path, err, archive.ErrBadArchive)
	}
	opts := desc.Options
	opts.Rootfs, opts.AutoRemove = "", false
	if err := opts.validateSettings(); err != nil {
		return nil, fmt.Errorf("import %q: %w", path, err)
	}
	diskPath := filepath.Join(work, diskMember)
	if err := checkStandaloneQcow2(ctx, diskPath); err != nil {
		return nil, fmt.Errorf("import %q: %w", path, err)
	}

	b := &Box{
		rt:              rt,
		id:              newID(),
		name:            name,
		opts:            opts,
		imported:        true,
		imageEntrypoint: desc.ImageEntrypoint,
		imageCmd:        desc.ImageCmd,
		createdAt:       time.Now(),
		status:          StatusStopped,
	}
	err = func() error {
		if err := os.MkdirAll(rt.layout.BoxDir(b.id), 0o700); err != nil {
			return err
		}
		if err := os.Rename(diskPath, rt.layout.Overlay(b.id)); err != nil {
			return err
		}
		rec, err := b.record()
		if err != nil {
			return err
		}
		return rt.db.CreateBox(context.WithoutCancel(ctx), rec)
	}()
	if err != nil {
		os.RemoveAll(rt.layout.BoxDir(b.id))
		return nil, fmt.Errorf("import %q: %w", path, err)
	}
	rt.mu.Lock()
	rt.boxes[b.id] = b
	rt.mu.Unlock()
	rt.log.Info("box imported", "box", b.id, "archive", path)
	return b, nil
}

// checkStandaloneQcow2 refuses a disk that is not a plain qcow2, or whose
// header points at other files: a backing file or an external data file
// would let an archive read host files into the box.
func checkStandaloneQcow2(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", "-f", "qcow2", path).Output()
	if err != nil {
		return fmt.Errorf("disk is not a readable qcow2: %v: %w", err, archive.ErrBadArchive)
	}
	var info struct {
		Format          string `json:"format"`
		BackingFilename string `json:"backing-filename"`
		FullBacking     string `json:"full-backing-filename"`
		FormatSpecific  struct {
			Data struct {
				DataFile string `json:"data-file"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return fmt.Errorf("disk info: %v: %w", err, archive.ErrBadArchive)
	}
	switch {
	case info.Format != "qcow2":
		return fmt.Errorf("disk format %q, want qcow2: %w", info.Format, archive.ErrBadArchive)
	case info.BackingFilename != "" || info.FullBacking != "":
		return fmt.Errorf("disk has a backing file %q: %w", info.BackingFilename, archive.ErrBadArchive)
	case info.FormatSpecific.Data.DataFile != "":
		return fmt.Errorf("disk has an external data file %q: %w", info.FormatSpecific.Data.DataFile, archive.ErrBadArchive)
	}
	return nil
}
