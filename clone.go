package boxlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/boxlite-go/boxlite/internal/disk"
	"github.com/boxlite-go/boxlite/internal/store"
)

// CloneOptions tune Box.Clone. (None yet; the zero value clones.)
type CloneOptions struct{}

// Clone makes a new box, in StatusStopped, whose disk is this box's disk
// at this instant; later writes on either side never reach the other.
// The source's current overlay becomes a shared read-only layer and both
// boxes continue on fresh overlays above it, so a clone costs O(1)
// whatever the data. A running source is quiesced (guest sync, VM paused
// for the switch of its disk to the new overlay) and keeps running.
func (b *Box) Clone(ctx context.Context, opts CloneOptions, name string) (*Box, error) {
	rt := b.rt
	if name != "" && !validName(name) {
		return nil, fmt.Errorf("box name %q: use letters, digits, '-', '_' and '.': %w", name, ErrInvalidArgument)
	}
	if name != "" {
		if rec, err := rt.db.GetBox(ctx, name); err == nil && rec.Name == name {
			return nil, fmt.Errorf("box name %q: %w", name, ErrAlreadyExists)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.status == StatusRunning && b.machine == nil {
		if err := b.attach(); err != nil { // run by another process
			return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
		}
	}
	layer, dropped, err := b.freeze(ctx)
	if err != nil {
		return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
	}
	c := &Box{
		rt:              rt,
		id:              newID(),
		name:            name,
		opts:            b.opts,
		base:            b.base,
		layers:          append([]string(nil), b.layers...),
		imported:        b.imported,
		imageEntrypoint: b.imageEntrypoint,
		imageCmd:        b.imageCmd,
		createdAt:       time.Now(),
		status:          StatusStopped,
	}
	c.opts.AutoRemove, c.opts.Detach = false, b.opts.Detach
	if len(c.layers) > maxChainDepth {
		// The running source keeps its deep chain until its next clone
		// while stopped; the clone starts shallow.
		flat := rt.layout.Layer(newID() + ".qcow2")
		base := b.chainBase()
		if err := disk.Flatten(ctx, layer, flat, base, "raw"); err != nil {
			return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
		}
		_ = os.Chmod(flat, 0o400)
		c.layers = []string{flat}
		if base != "" && slices.Contains(b.layers, base) {
			c.layers = []string{base, flat}
		}
		layer = flat
	}
	err = func() error {
		if err := os.MkdirAll(rt.layout.BoxDir(c.id), 0o700); err != nil {
			return err
		}
		if err := disk.Overlay(ctx, layer, "qcow2", rt.layout.Overlay(c.id), 0); err != nil {
			return err
		}
		rec, err := c.record()
		if err != nil {
			return err
		}
		return rt.db.CreateBox(context.WithoutCancel(ctx), rec)
	}()
	if err != nil {
		os.RemoveAll(rt.layout.BoxDir(c.id))
		rt.collectLayers(context.WithoutCancel(ctx), c.layers)
		return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
	}
	rt.mu.Lock()
	rt.boxes[c.id] = c
	rt.mu.Unlock()
	if err := rt.collectLayers(context.WithoutCancel(ctx), dropped); err != nil {
		rt.log.Warn("collect layers", "err", err)
	}
	rt.log.Info("box cloned", "box", b.id, "clone", c.id, "layer", layer)
	return c, nil
}

// freeze turns the box's current overlay into a read-only layer in the
// pool and gives the box a fresh overlay above it; the box's row records
// the new chain. A running box switches disks live (its supervisor pauses
// the VM for the switch). A stopped box whose chain got deeper than
// maxChainDepth has its layers folded into one; the layers it no longer
// uses are returned for collection. b.mu is held.
func (b *Box) freeze(ctx context.Context) (layer string, dropped []string, err error) {
	rt := b.rt
	if err := os.MkdirAll(rt.layout.LayersDir(), 0o700); err != nil {
		return "", nil, err
	}
	overlay := rt.layout.Overlay(b.id)
	layer = rt.layout.Layer(newID() + ".qcow2")
	switch {
	case b.status == StatusRunning && b.machine != nil:
		snap, ok := b.machine.(interface {
			SnapshotDisk(ctx context.Context, overlay string) (time.Duration, error)
		})
		if !ok {
			return "", nil, fmt.Errorf("this VMM cannot snapshot a running disk: %w", ErrInvalidState)
		}
		size, err := disk.VirtualSize(ctx, overlay)
		if err != nil {
			return "", nil, err
		}
		// The layer is a second name of the current overlay file: QEMU
		// keeps its file open, and after the switch never writes it.
		if err := os.Link(overlay, layer); err != nil {
			return "", nil, err
		}
		next := overlay + ".next"
		if err := disk.OverlayInUse(ctx, layer, "qcow2", next, size); err != nil {
			os.Remove(layer)
			return "", nil, err
		}
		paused, err := snap.SnapshotDisk(ctx, next)
		if err != nil {
			os.Remove(next)
			os.Remove(layer)
			return "", nil, err
		}
		if err := os.Rename(next, overlay); err != nil {
			return "", nil, err // the VM runs on next; the box cannot restart cleanly
		}
		b.lastPause = paused
		rt.log.Info("froze running disk", "box", b.id, "paused", paused)
	case b.status == StatusStopped || b.status == StatusConfigured:
		if err := os.Rename(overlay, layer); err != nil {
			return "", nil, err
		}
		if err := disk.Overlay(ctx, layer, "qcow2", overlay, 0); err != nil {
			os.Rename(layer, overlay)
			return "", nil, err
		}
	default:
		return "", nil, fmt.Errorf("box is %s: %w", b.status, ErrInvalidState)
	}
	_ = os.Chmod(layer, 0o400) // layers are never written again
	b.layers = append(append([]string(nil), b.layers...), layer)

	if len(b.layers) > maxChainDepth && b.machine == nil {
		flat := rt.layout.Layer(newID() + ".qcow2")
		base := b.chainBase()
		if err := disk.Flatten(ctx, layer, flat, base, "raw"); err == nil {
			_ = os.Chmod(flat, 0o400)
			if err := disk.Overlay(ctx, flat, "qcow2", overlay+".new", 0); err == nil && os.Rename(overlay+".new", overlay) == nil {
				var kept []string
				for _, l := range b.layers {
					if l == base {
						kept = append(kept, l)
					} else {
						dropped = append(dropped, l)
					}
				}
				b.layers, layer = append(kept, flat), flat
			} else {
				os.Remove(flat)
			}
		}
	}
	rec, err := b.record()
	if err == nil {
		_, err = rt.db.UpdateBox(context.WithoutCancel(ctx), b.id, func(r *store.Box) error {
			r.Config = rec.Config
			return nil
		})
	}
	if err != nil {
		return "", nil, fmt.Errorf("record layer: %w", err)
	}
	return layer, dropped, nil
}

// maxChainDepth bounds the layers under a box's overlay; a clone that
// would go deeper folds the frozen layers into one (a copy of the data
// written, once every few clones).
const maxChainDepth = 8

// chainBase is the raw image at the bottom of the box's disk chain: the
// image's base, the ext4 made from its rootfs directory, its ext4 rootfs
// file, or "" for a standalone disk (an imported box).
func (b *Box) chainBase() string {
	switch {
	case b.base != "":
		return b.base
	case len(b.layers) > 0 && strings.HasSuffix(b.layers[0], "-base.ext4"):
		return b.layers[0]
	case b.opts.Rootfs != "" && !b.imported:
		return b.opts.Rootfs
	}
	return ""
}

// collectLayers deletes those of the candidate layer files (the layers of
// a removed box) that no box's chain uses any more. Only candidates are
// considered: a layer another process is making for a box it has not
// recorded yet has another name.
func (rt *Runtime) collectLayers(ctx context.Context, candidates []string) error {
	if len(candidates) == 0 {
		return nil
	}
	recs, err := rt.db.ListBoxes(ctx)
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, rec := range recs {
		var cfg boxConfig
		if err := json.Unmarshal(rec.Config, &cfg); err != nil {
			return fmt.Errorf("box %s: stored config: %w", rec.ID, err)
		}
		for _, l := range cfg.Layers {
			used[l] = true
		}
	}
	var errs []error
	for _, f := range candidates {
		if filepath.Dir(f) != rt.layout.LayersDir() {
			continue // never delete outside the layer pool
		}
		if !used[f] {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
