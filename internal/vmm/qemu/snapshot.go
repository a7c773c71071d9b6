package qemu

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// SnapshotDisk makes the pre-created qcow2 file overlay (whose backing is
// the disk's current top file) the active layer of the first disk of the
// running VM, so the previous top is never written again and can be
// shared. The VM is paused around the switch (QMP stop, blockdev-snapshot,
// cont); SnapshotDisk returns how long it was paused.
func (m *Machine) SnapshotDisk(ctx context.Context, overlay string) (time.Duration, error) {
	m.mu.Lock()
	mon := m.mon
	if m.diskTop == "" {
		m.diskTop = diskNode(0)
	}
	top := m.diskTop
	m.snapshots++
	node := fmt.Sprintf("%s-s%d", diskNode(0), m.snapshots)
	m.mu.Unlock()
	if mon == nil {
		return 0, fmt.Errorf("machine %q: snapshot: not running: %w", m.name, errdefs.ErrInvalidState)
	}
	_, err := mon.run(ctx, "blockdev-add", map[string]any{
		"driver":    "qcow2",
		"node-name": node,
		"file":      map[string]any{"driver": "file", "filename": overlay},
		"backing":   nil,
	})
	if err != nil {
		return 0, fmt.Errorf("machine %q: snapshot: %w", m.name, err)
	}
	t0 := time.Now()
	if _, err := mon.run(ctx, "stop", nil); err != nil {
		return 0, fmt.Errorf("machine %q: snapshot: %w", m.name, err)
	}
	_, serr := mon.run(ctx, "blockdev-snapshot", map[string]any{"node": top, "overlay": node})
	// Resume whatever happened: a paused box is worse than a failed clone.
	_, cerr := mon.run(context.WithoutCancel(ctx), "cont", nil)
	paused := time.Since(t0)
	if serr != nil {
		_, _ = mon.run(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": node})
		return paused, fmt.Errorf("machine %q: snapshot: %w", m.name, errors.Join(serr, cerr))
	}
	if cerr != nil {
		return paused, fmt.Errorf("machine %q: snapshot: resume: %w", m.name, cerr)
	}
	m.mu.Lock()
	m.diskTop = node
	m.mu.Unlock()
	return paused, nil
}
