package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// monitor is a QMP connection that records the events telling why the
// machine ended.
type monitor struct {
	mon *qmp.SocketMonitor
	// eventsDone is closed when the event stream has ended, that is when
	// QEMU closed the connection.
	eventsDone chan struct{}

	mu             sync.Mutex
	shutdownReason string // of the last SHUTDOWN event
	panicked       bool   // a GUEST_PANICKED event was seen
	panicInfo      string
}

// dialMonitor connects to the QMP socket at path, retrying every 5 ms
// until it answers, ctx is done or exited is closed. The handshake is not
// bounded by ctx: QEMU answers it at once, and if it hangs the caller
// kills QEMU, which ends it.
func dialMonitor(ctx context.Context, path string, exited <-chan struct{}) (*monitor, error) {
	for {
		mon, err := qmp.NewSocketMonitor("unix", path, time.Second)
		if err == nil {
			if err := mon.Connect(); err != nil {
				mon.Disconnect()
				return nil, fmt.Errorf("qmp handshake: %w", err)
			}
			events, err := mon.Events(context.Background())
			if err != nil {
				mon.Disconnect()
				return nil, fmt.Errorf("qmp events: %w", err)
			}
			m := &monitor{mon: mon, eventsDone: make(chan struct{})}
			go m.watch(events)
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect qmp: %w (last error: %v)", ctx.Err(), err)
		case <-exited:
			return nil, errors.New("qemu exited before its qmp socket answered")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// watch records events until the stream ends. It must keep reading: the
// qmp package delivers events and command replies from one goroutine.
func (m *monitor) watch(events <-chan qmp.Event) {
	defer close(m.eventsDone)
	for ev := range events {
		m.mu.Lock()
		switch ev.Event {
		case "SHUTDOWN":
			m.shutdownReason, _ = ev.Data["reason"].(string)
		case "GUEST_PANICKED":
			m.panicked = true
			if info, err := json.Marshal(ev.Data["info"]); err == nil && string(info) != "null" {
				m.panicInfo = string(info)
			}
		}
		m.mu.Unlock()
	}
}

// ending returns what the events said about the machine's end.
func (m *monitor) ending() (shutdownReason string, panicked bool, panicInfo string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shutdownReason, m.panicked, m.panicInfo
}

// run executes a QMP command and returns its "return" value. If ctx ends
// first, run returns ctx's error and the command's reply is read and
// dropped in the background, until QEMU answers or exits.
func (m *monitor) run(ctx context.Context, command string, args any) (json.RawMessage, error) {
	cmd, err := json.Marshal(qmp.Command{Execute: command, Args: args})
	if err != nil {
		return nil, err
	}
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := m.mon.Run(cmd)
		ch <- result{out, err}
	}()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("qmp %s: %w", command, ctx.Err())
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, r.err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
		}
		if err := json.Unmarshal(r.out, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		return resp.Return, nil
	}
}

// queryStatus returns the VM's run state ("running", "paused", ...).
func (m *monitor) queryStatus(ctx context.Context) (string, error) {
	out, err := m.run(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return st.Status, nil
}

// quit asks QEMU to exit at once. QEMU may exit before it replies, so a
// lost reply is not an error; the caller waits for the process instead.
func (m *monitor) quit() {
	go m.mon.Run([]byte(`{"execute":"quit"}`))
}

// close ends the connection, after waiting up to a second for the event
// stream to end on its own (QEMU has exited) so that no event is lost.
func (m *monitor) close() {
	select {
	case <-m.eventsDone:
	case <-time.After(time.Second):
	}
	m.mon.Disconnect()
}
