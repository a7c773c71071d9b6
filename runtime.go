package boxlite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/boxlite-go/boxlite/internal/disk"
	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/boxlite-go/boxlite/internal/image"
	"github.com/boxlite-go/boxlite/internal/store"
)

// Runtime creates and runs boxes under one home directory.
type Runtime struct {
	opts   Options
	layout store.Layout
	log    *slog.Logger

	db *store.DB

	mu     sync.Mutex
	boxes  map[string]*Box // by id: the boxes this process has touched
	closed bool

	assetsMu        sync.Mutex
	vmlinux, initrd string

	// watchers counts the goroutines following running VMs; Shutdown
	// closes stopWatching and waits for them before closing the store.
	watchers     sync.WaitGroup
	stopWatching chan struct{}

	imagesOnce sync.Once
	images     *image.Store
	imagesErr  error
}

// NewRuntime opens the home directory, creating it when missing.
func NewRuntime(opts Options) (*Runtime, error) {
	if opts.HomeDir == "" {
		opts.HomeDir = os.Getenv("BOXLITE_HOME")
	}
	if opts.HomeDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("home dir: %w", err)
		}
		opts.HomeDir = filepath.Join(home, ".boxlite")
	}
	abs, err := filepath.Abs(opts.HomeDir)
	if err != nil {
		return nil, fmt.Errorf("home dir %q: %w", opts.HomeDir, err)
	}
	opts.HomeDir = abs
	opts.slirp = os.Getenv("BOXLITE_NET_BASELINE") == "slirp"
	if opts.Accel == "" {
		opts.Accel = os.Getenv("BOXLITE_ACCEL")
	}
	switch opts.Accel {
	case "", "kvm", "tcg":
	default:
		return nil, fmt.Errorf("accel %q: want kvm, tcg or empty: %w", opts.Accel, ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Join(abs, "boxes"), 0o700); err != nil {
		return nil, fmt.Errorf("home dir %q: not writable: %w: %w", abs, err, ErrInvalidArgument)
	}
	if f, err := os.CreateTemp(abs, ".write-test-"); err != nil {
		return nil, fmt.Errorf("home dir %q: not writable: %w: %w", abs, err, ErrInvalidArgument)
	} else {
		f.Close()
		os.Remove(f.Name())
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	layout := store.Layout{Home: abs}
	ctx := context.Background()
	db, err := store.Open(ctx, layout)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrInvalidArgument)
	}
	rt := &Runtime{
		opts:   opts,
		layout: layout,
		log:    log,
		db:     db,
		boxes:  map[string]*Box{},

		stopWatching: make(chan struct{}),
	}
	if err := rt.recover(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("home dir %q: recover: %w", abs, err)
	}
	return rt, nil
}

// HomeDir is the runtime's resolved home directory.
func (rt *Runtime) HomeDir() string { return rt.opts.HomeDir }

func newID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

func validName(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && (r == '-' || r == '_' || r == '.')
		if !ok {
			return false
		}
	}
	return true
}

func (o *BoxOptions) validate() error {
	switch {
	case o.CPUs < 0 || o.CPUs > 64:
		return fmt.Errorf("cpus %d: want 1..64: %w", o.CPUs, ErrInvalidArgument)
	case o.MemoryMiB < 0 || (o.MemoryMiB > 0 && o.MemoryMiB < 64) || o.MemoryMiB > 256<<10:
		return fmt.Errorf("memory %d MiB: want 64..262144: %w", o.MemoryMiB, ErrInvalidArgument)
	case o.DiskSizeGB < 0 || o.DiskSizeGB > 16<<10:
		return fmt.Errorf("disk size %d GB: want 1..16384: %w", o.DiskSizeGB, ErrInvalidArgument)
	case o.Image == "" && o.Rootfs == "":
		return fmt.Errorf("box needs an image or a rootfs: %w", ErrInvalidArgument)
	case o.Image != "" && o.Rootfs != "":
		return fmt.Errorf("box takes an image or a rootfs, not both: %w", ErrInvalidArgument)
	}
	return o.validateSettings()
}

// validateSettings checks and defaults everything but the disk's source.
func (o *BoxOptions) validateSettings() error {
	switch {
	case o.CPUs < 0 || o.CPUs > 64:
		return fmt.Errorf("cpus %d: want 1..64: %w", o.CPUs, ErrInvalidArgument)
	case o.MemoryMiB < 0 || (o.MemoryMiB > 0 && o.MemoryMiB < 64) || o.MemoryMiB > 256<<10:
		return fmt.Errorf("memory %d MiB: want 64..262144: %w", o.MemoryMiB, ErrInvalidArgument)
	case o.DiskSizeGB < 0 || o.DiskSizeGB > 16<<10:
		return fmt.Errorf("disk size %d GB: want 1..16384: %w", o.DiskSizeGB, ErrInvalidArgument)
	}
	for _, kv := range o.Env {
		if !strings.Contains(kv, "=") || strings.HasPrefix(kv, "=") {
			return fmt.Errorf("env %q: want KEY=VALUE: %w", kv, ErrInvalidArgument)
		}
	}
	if o.WorkingDir != "" && !strings.HasPrefix(o.WorkingDir, "/") {
		return fmt.Errorf("working dir %q: must be absolute: %w", o.WorkingDir, ErrInvalidArgument)
	}
	if err := o.validateNetwork(); err != nil {
		return err
	}
	if o.CPUs == 0 {
		o.CPUs = DefaultCPUs
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = DefaultMemoryMiB
	}
	if o.DiskSizeGB == 0 {
		o.DiskSizeGB = DefaultDiskSizeGB
	}
	return nil
}

// Create makes a box in StatusConfigured: its root disk is prepared, no VM
// runs until Start. name may be empty. On error nothing is left behind.
func (rt *Runtime) Create(ctx context.Context, opts BoxOptions, name string) (*Box, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if name != "" && !validName(name) {
		return nil, fmt.Errorf("box name %q: use letters, digits, '-', '_' and '.': %w", name, ErrInvalidArgument)
	}
	var img *image.Image
	var base string
	if opts.Image != "" {
		var err error
		if img, base, err = rt.imageBase(ctx, opts.Image); err != nil {
			return nil, err
		}
		opts.Image = img.Ref
	} else {
		rootfs, err := filepath.Abs(opts.Rootfs)
		if err != nil {
			return nil, fmt.Errorf("rootfs %q: %w", opts.Rootfs, ErrInvalidArgument)
		}
		st, err := os.Stat(rootfs)
		if err != nil {
			return nil, fmt.Errorf("rootfs %q: %w", opts.Rootfs, ErrNotFound)
		}
		if !st.IsDir() {
			ok, err := disk.IsExt4(rootfs)
			if err != nil || !ok {
				return nil, fmt.Errorf("rootfs %q: neither a directory nor an ext4 image: %w", opts.Rootfs, ErrInvalidArgument)
			}
		}
		opts.Rootfs = rootfs
	}

	id := newID()
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil, fmt.Errorf("runtime is shut down: %w", ErrInvalidState)
	}
	for _, b := range rt.boxes {
		if name != "" && b.name == name {
			rt.mu.Unlock()
			return nil, fmt.Errorf("box name %q: %w", name, ErrAlreadyExists)
		}
	}
	if name != "" {
		if rec, err := rt.db.GetBox(ctx, name); err == nil && rec.Name == name {
			rt.mu.Unlock()
			return nil, fmt.Errorf("box name %q: %w", name, ErrAlreadyExists)
		}
	}
	// Reserve the name in this process while the disk is made; the
	// store's unique index settles races with other processes.
	b := &Box{rt: rt, id: id, name: name, opts: opts, status: StatusConfigured, createdAt: time.Now(), base: base}
	if img != nil {
		b.applyImageConfig(img.Config)
	}
	if opts.MainProcess {
		if _, err := b.Command(); err != nil {
			rt.mu.Unlock()
			return nil, fmt.Errorf("main process: %w", err)
		}
	}
	rt.boxes[id] = b
	rt.mu.Unlock()

	err := rt.makeDisks(ctx, b)
	if err == nil {
		var rec store.Box
		if rec, err = b.record(); err == nil {
			err = rt.db.CreateBox(context.WithoutCancel(ctx), rec)
		}
	}
	if err != nil {
		rt.mu.Lock()
		delete(rt.boxes, id)
		rt.mu.Unlock()
		os.RemoveAll(rt.layout.BoxDir(id))
		for _, l := range b.layers {
			os.Remove(l)
		}
		return nil, fmt.Errorf("box %s: create: %w", b.label(), err)
	}
	rt.log.Info("box created", "box", id, "name", name, "image", opts.Image, "rootfs", opts.Rootfs)
	return b, nil
}

func (rt *Runtime) makeDisks(ctx context.Context, b *Box) error {
	dir := rt.layout.BoxDir(b.id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	size := int64(b.opts.DiskSizeGB) << 30
	backing, format := b.opts.Rootfs, "raw"
	if b.base != "" {
		backing = b.base
	} else if st, err := os.Stat(b.opts.Rootfs); err == nil && st.IsDir() {
		if err := os.MkdirAll(rt.layout.LayersDir(), 0o700); err != nil {
			return err
		}
		backing = rt.layout.Layer(b.id + "-base.ext4")
		if err := disk.BaseFromDir(ctx, b.opts.Rootfs, backing, size); err != nil {
			return err
		}
		b.layers = []string{backing}
	} else if err == nil && st.Size() > size {
		size = 0 // keep the image's own size
	}
	if st, err := os.Stat(backing); err == nil && size < st.Size() {
		size = 0
	}
	return disk.Overlay(ctx, backing, format, rt.layout.Overlay(b.id), size)
}

// Get finds a box by id, name, or unique id prefix, among all boxes of
// the home dir (those other processes created too).
func (rt *Runtime) Get(ctx context.Context, idOrName string) (*Box, error) {
	if rt.isClosed() {
		return nil, fmt.Errorf("runtime is shut down: %w", ErrInvalidState)
	}
	if idOrName == "" {
		return nil, fmt.Errorf("box: empty id or name: %w", ErrInvalidArgument)
	}
	rec, err := rt.db.GetBox(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	return rt.boxFor(rec)
}

func (rt *Runtime) isClosed() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.closed
}

// boxFor returns this process's Box for a row, refreshing the state of a
// box it does not run.
func (rt *Runtime) boxFor(rec store.Box) (*Box, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if b, ok := rt.boxes[rec.ID]; ok {
		b.mu.Lock()
		if b.machine == nil && b.status != StatusStarting && b.status != StatusStopping {
			b.loadState(rec)
		}
		b.mu.Unlock()
		return b, nil
	}
	b, err := rt.boxFromRecord(rec)
	if err != nil {
		return nil, err
	}
	rt.boxes[rec.ID] = b
	return b, nil
}

// List returns every box of the home dir, oldest first.
func (rt *Runtime) List(ctx context.Context) ([]BoxInfo, error) {
	if rt.isClosed() {
		return nil, fmt.Errorf("runtime is shut down: %w", ErrInvalidState)
	}
	recs, err := rt.db.ListBoxes(ctx)
	if err != nil {
		return nil, err
	}
	infos := make([]BoxInfo, 0, len(recs))
	for _, rec := range recs {
		b, err := rt.boxFor(rec)
		if err != nil {
			return nil, err
		}
		infos = append(infos, b.Info())
	}
	return infos, nil
}

// Remove deletes a box and its files. A running box needs force, which
// kills it first.
func (rt *Runtime) Remove(ctx context.Context, idOrName string, force bool) error {
	b, err := rt.Get(ctx, idOrName)
	if err != nil {
		return err
	}
	return rt.removeBox(ctx, b, force)
}

// removeBox deletes b's VM (with force), row, files and unshared layers.
func (rt *Runtime) removeBox(ctx context.Context, b *Box, force bool) error {
	if err := b.remove(ctx, force); err != nil {
		return err
	}
	if err := rt.db.DeleteBox(context.WithoutCancel(ctx), b.id); err != nil {
		return err
	}
	rt.mu.Lock()
	delete(rt.boxes, b.id)
	rt.mu.Unlock()
	if err := os.RemoveAll(rt.layout.BoxDir(b.id)); err != nil {
		return err
	}
	b.mu.Lock()
	layers := b.layers
	b.mu.Unlock()
	return rt.collectLayers(context.WithoutCancel(ctx), layers)
}

// Shutdown stops every box this runtime started (except detached ones,
// which keep running for other processes to reach), gracefully until
// ctx's deadline and by force after it, and closes the home dir's
// metadata store. The runtime is unusable after.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil
	}
	rt.closed = true
	boxes := make([]*Box, 0, len(rt.boxes))
	for _, b := range rt.boxes {
		b.mu.Lock()
		mine := b.machine != nil && b.owned && !b.opts.Detach
		b.mu.Unlock()
		if mine {
			boxes = append(boxes, b)
		}
	}
	rt.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(boxes))
	for i, b := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Stop(ctx); err != nil && !errors.Is(err, ErrInvalidState) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	close(rt.stopWatching)
	rt.watchers.Wait()
	errs = append(errs, rt.db.Close())
	return errors.Join(errs...)
}

// agentPath finds the guest agent binary.
func (rt *Runtime) agentPath() (string, error) {
	if p := rt.opts.AgentPath; p != "" {
		return p, nil
	}
	if p := os.Getenv("BOXLITE_AGENT"); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "boxlite-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("boxlite-agent"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("guest agent boxlite-agent not found (set BOXLITE_AGENT or build it: CGO_ENABLED=0 go build -o bin/boxlite-agent ./cmd/boxlite-agent): %w", errdefs.ErrMissingDependency)
}
