package boxlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
// boxes get a fresh overlay on it, so the clone costs O(1) whatever the
// data. The source must be stopped (or never started); cloning a running
// box is not supported yet (ErrInvalidState).
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
	switch b.status {
	case StatusStopped, StatusConfigured:
	default:
		return nil, fmt.Errorf("box %s: clone: box is %s (cloning a running box is not supported yet): %w", b.label(), b.status, ErrInvalidState)
	}
	if err := os.MkdirAll(rt.layout.LayersDir(), 0o700); err != nil {
		return nil, err
	}

	// Freeze the source's overlay into a layer and give the source a new
	// overlay on it. On failure the source keeps (or gets back) its disk.
	overlay := rt.layout.Overlay(b.id)
	layer := rt.layout.Layer(newID() + ".qcow2")
	if err := os.Rename(overlay, layer); err != nil {
		return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
	}
	if err := disk.Overlay(ctx, layer, "qcow2", overlay, 0); err != nil {
		os.Rename(layer, overlay)
		return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
	}
	_ = os.Chmod(layer, 0o400) // layers are never written again
	oldLayers := b.layers
	b.layers = append(append([]string(nil), b.layers...), layer)
	var dropped []string
	if len(b.layers) > maxChainDepth {
		// Keep chains shallow: fold the frozen layers into one.
		flat := rt.layout.Layer(newID() + ".qcow2")
		base := b.chainBase()
		if err := disk.Flatten(ctx, layer, flat, base, "raw"); err != nil {
			b.layers = oldLayers
			os.Remove(overlay)
			os.Rename(layer, overlay)
			return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
		}
		_ = os.Chmod(flat, 0o400)
		if err := disk.Overlay(ctx, flat, "qcow2", overlay+".new", 0); err != nil {
			os.Remove(flat)
			return nil, fmt.Errorf("box %s: clone: %w", b.label(), err)
		}
		os.Rename(overlay+".new", overlay)
		var kept []string
		for _, l := range b.layers {
			if l == base {
				kept = append(kept, l)
			} else {
				dropped = append(dropped, l)
			}
		}
		b.layers, layer = append(kept, flat), flat
	}
	if rec, err := b.record(); err == nil {
		_, err = rt.db.UpdateBox(context.WithoutCancel(ctx), b.id, func(r *store.Box) error {
			r.Config = rec.Config
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("box %s: clone: record layer: %w", b.label(), err)
		}
	}

	c := &Box{
		rt:              rt,
		id:              newID(),
		name:            name,
		opts:            b.opts,
		base:            b.base,
		layers:          append([]string(nil), b.layers...),
		imageEntrypoint: b.imageEntrypoint,
		imageCmd:        b.imageCmd,
		createdAt:       time.Now(),
		status:          StatusStopped,
	}
	c.opts.AutoRemove = false
	err := func() error {
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
