package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/boxlite-go/boxlite/internal/agent/client"
	"github.com/boxlite-go/boxlite/internal/vmm/qemu"
)

// The control socket takes one JSON request per connection and answers
// one JSON response: host-side requests that need the VMM, which only
// the supervisor holds. Only processes that can reach the run directory
// (mode 0700) can connect.

type controlRequest struct {
	Op      string `json:"op"`      // "snapshot", "netstats"
	Overlay string `json:"overlay"` // snapshot: the new active layer
}

type controlResponse struct {
	Paused time.Duration `json:"paused,omitempty"`
	NetRx  uint64        `json:"netRx,omitempty"`
	NetTx  uint64        `json:"netTx,omitempty"`
	Error  string        `json:"error,omitempty"`
}

func serveControl(l net.Listener, m *qemu.Machine, agent *client.Client, nw *network, log *slog.Logger) {
	var mu sync.Mutex // one snapshot at a time
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var req controlRequest
			if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
				return
			}
			var resp controlResponse
			switch req.Op {
			case "snapshot":
				mu.Lock()
				paused, err := snapshot(m, agent, req.Overlay)
				mu.Unlock()
				resp.Paused = paused
				if err != nil {
					resp.Error = err.Error()
				}
				log.Info("snapshot", "overlay", req.Overlay, "paused", paused, "err", err)
			case "netstats":
				resp.NetRx, resp.NetTx = nw.stats()
			default:
				resp.Error = fmt.Sprintf("unknown op %q", req.Op)
			}
			json.NewEncoder(c).Encode(resp)
		}()
	}
}

// snapshot quiesces the guest's filesystems (sync) and switches the disk
// to the overlay while the VM is paused.
func snapshot(m *qemu.Machine, agent *client.Client, overlay string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := agent.Sync(ctx); err != nil {
		return 0, fmt.Errorf("guest sync: %w", err)
	}
	return m.SnapshotDisk(ctx, overlay)
}

// SnapshotDisk asks the supervisor to make overlay (a qcow2 whose backing
// is the disk's current top file) the VM's active disk layer; it returns
// how long the VM was paused.
func (h *Handle) SnapshotDisk(ctx context.Context, overlay string) (time.Duration, error) {
	resp, err := h.control(ctx, controlRequest{Op: "snapshot", Overlay: overlay})
	return resp.Paused, err
}

// NetStats returns the bytes the box's network card received and sent.
func (h *Handle) NetStats(ctx context.Context) (rx, tx uint64, err error) {
	resp, err := h.control(ctx, controlRequest{Op: "netstats"})
	return resp.NetRx, resp.NetTx, err
}

// control makes one control request.
func (h *Handle) control(ctx context.Context, req controlRequest) (controlResponse, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(h.dir, ControlName))
	if err != nil {
		return controlResponse{}, fmt.Errorf("supervisor control: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return controlResponse{}, err
	}
	var resp controlResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return controlResponse{}, fmt.Errorf("supervisor control: %w", err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("supervisor: %s", resp.Error)
	}
	return resp, nil
}
