package boxlite

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/boxlite-go/boxlite/internal/store"
)

// boxConfig is what the metadata store keeps of a box beyond its status:
// everything needed to start it again from another process.
type boxConfig struct {
	Options         BoxOptions `json:"options"`
	Base            string     `json:"base,omitempty"`
	Layers          []string   `json:"layers,omitempty"`
	Imported        bool       `json:"imported,omitempty"`
	ImageEntrypoint []string   `json:"imageEntrypoint,omitempty"`
	ImageCmd        []string   `json:"imageCmd,omitempty"`
}

// record is the box's row; b.mu must be held or b not yet shared.
func (b *Box) record() (store.Box, error) {
	cfg, err := json.Marshal(boxConfig{Options: b.opts, Base: b.base, Layers: b.layers, Imported: b.imported, ImageEntrypoint: b.imageEntrypoint, ImageCmd: b.imageCmd})
	if err != nil {
		return store.Box{}, err
	}
	rec := store.Box{
		ID:        b.id,
		Name:      b.name,
		Status:    string(b.status),
		Image:     b.opts.Image,
		Rootfs:    b.opts.Rootfs,
		Config:    cfg,
		CreatedAt: b.createdAt,
		StartedAt: b.startedAt,
		StoppedAt: b.stoppedAt,
		Labels:    b.opts.Labels,
	}
	if b.machine != nil {
		rec.PID = b.machine.PID()
	}
	if b.downErr != nil {
		rec.Error = b.downErr.Error()
	}
	return rec, nil
}

// boxFromRecord rebuilds a box another process (or an earlier run of this
// one) created.
func (rt *Runtime) boxFromRecord(rec store.Box) (*Box, error) {
	var cfg boxConfig
	if err := json.Unmarshal(rec.Config, &cfg); err != nil {
		return nil, fmt.Errorf("box %s: stored config: %w", rec.ID, err)
	}
	b := &Box{
		rt:              rt,
		id:              rec.ID,
		name:            rec.Name,
		opts:            cfg.Options,
		base:            cfg.Base,
		layers:          cfg.Layers,
		imported:        cfg.Imported,
		imageEntrypoint: cfg.ImageEntrypoint,
		imageCmd:        cfg.ImageCmd,
		createdAt:       rec.CreatedAt,
	}
	b.loadState(rec)
	return b, nil
}

// loadState takes the status of a box this process does not run from its
// row; b.mu must be held or b not yet shared.
func (b *Box) loadState(rec store.Box) {
	b.status = Status(rec.Status)
	b.startedAt, b.stoppedAt = rec.StartedAt, rec.StoppedAt
	if b.foreignPID != rec.PID {
		b.ports = nil // another VM: its ports are read afresh
	}
	b.foreignPID = rec.PID
	b.downErr = nil
	if rec.Error != "" {
		b.downErr = storedError(rec.Error)
	}
}

// storedError is a reason read back from the store; it still matches
// ErrBoxDown.
type storedError string

func (e storedError) Error() string { return string(e) }
func (e storedError) Unwrap() error { return ErrBoxDown }

// save writes the box's current state to the store.
func (b *Box) save(ctx context.Context) error {
	b.mu.Lock()
	rec, err := b.record()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = b.rt.db.UpdateBox(context.WithoutCancel(ctx), b.id, func(r *store.Box) error {
		r.Status, r.PID, r.Error = rec.Status, rec.PID, rec.Error
		r.StartedAt, r.StoppedAt = rec.StartedAt, rec.StoppedAt
		return nil
	})
	if err != nil {
		b.rt.log.Warn("save box state", "box", b.id, "err", err)
	}
	return err
}

// recover marks boxes recorded as running whose VM is gone as stopped,
// keeping the reason: their runtime exited or was killed (a box's QEMU
// never outlives the runtime that started it).
func (rt *Runtime) recover(ctx context.Context) error {
	recs, err := rt.db.ListBoxes(ctx)
	if err != nil {
		return err
	}
	rt.removeOrphanDirs(recs)
	for _, rec := range recs {
		switch Status(rec.Status) {
		case StatusRunning, StatusStopping, StatusPaused:
			if qemuAlive(rec.PID, rec.ID) {
				continue
			}
		case StatusStarting:
			// A start in progress elsewhere, unless it is long overdue.
			if time.Since(rec.StartedAt) < DefaultBootTimeout+time.Minute {
				continue
			}
		default:
			continue
		}
		_, err := rt.db.UpdateBox(ctx, rec.ID, func(r *store.Box) error {
			if r.PID != rec.PID || r.Status != rec.Status {
				return nil // changed meanwhile
			}
			r.Status = string(StatusStopped)
			r.Error = fmt.Sprintf("%v: the runtime that ran it (VM pid %d) exited without stopping it", ErrBoxDown, rec.PID)
			r.PID = 0
			r.StoppedAt = time.Now()
			return nil
		})
		if err != nil {
			return err
		}
		rt.log.Warn("recovered box whose VM is gone", "box", rec.ID, "pid", rec.PID)
		var cfg boxConfig
		if json.Unmarshal(rec.Config, &cfg) == nil && cfg.Options.AutoRemove {
			// Its owner died before it could remove it.
			if err := rt.db.DeleteBox(ctx, rec.ID); err == nil {
				os.RemoveAll(rt.layout.BoxDir(rec.ID))
				rt.collectLayers(ctx, cfg.Layers)
			}
		}
	}
	return nil
}

// qemuAlive reports whether pid is the QEMU process of box id.
func qemuAlive(pid int, id string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return strings.Contains(string(cmdline), "boxlite-"+id+"\x00")
}

// orphanAge is how old a box directory without a row must be before
// recovery removes it: younger ones may belong to a create in progress in
// another process (the row is written once the disks are made).
const orphanAge = 10 * time.Minute

// removeOrphanDirs deletes box directories left by a create that died
// between making the disks and writing the row.
func (rt *Runtime) removeOrphanDirs(recs []store.Box) {
	known := map[string]bool{}
	for _, r := range recs {
		known[r.ID] = true
	}
	entries, _ := os.ReadDir(rt.layout.BoxesDir())
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || known[e.Name()] || time.Since(info.ModTime()) < orphanAge {
			continue
		}
		rt.log.Warn("removing box dir without a record", "box", e.Name())
		os.RemoveAll(rt.layout.BoxDir(e.Name()))
	}
}
