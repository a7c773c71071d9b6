package boxlite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/boxlite-go/boxlite/internal/supervisor"
)

// A box's main process (BoxOptions.MainProcess) is run by its supervisor,
// which outlives the program that started a detached box: the supervisor
// starts it right after boot, appends its output to the box's main.log,
// writes how it ended to main.json, and then stops the box.

// LogOptions select what Box.Logs returns.
type LogOptions struct {
	// Follow keeps the reader open while the main process runs: it returns
	// output as it is written and io.EOF once the process has ended (or
	// the box has stopped), or ctx's error when ctx ends first.
	Follow bool
}

// Logs returns the output of the box's main process: stdout and stderr
// interleaved as they were written, of every run since the box was created
// (each Start appends, as docker logs shows a restarted container's). A box
// that never ran gives an empty reader. A box without a main process fails
// with ErrInvalidState; its console is at ConsoleLogPath.
func (b *Box) Logs(ctx context.Context, opts LogOptions) (io.ReadCloser, error) {
	if !b.opts.MainProcess {
		return nil, fmt.Errorf("box %s: logs: box has no main process (see its console log): %w", b.label(), ErrInvalidState)
	}
	path := b.rt.layout.MainLog(b.id)
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if !opts.Follow {
			return io.NopCloser(strings.NewReader("")), nil
		}
		f = nil // opened once the supervisor creates it
	case err != nil:
		return nil, fmt.Errorf("box %s: logs: %w", b.label(), err)
	case !opts.Follow:
		return f, nil
	}
	return &followReader{ctx: ctx, path: path, f: f, running: b.mainRunning}, nil
}

// mainRunning reports whether the box's main process runs: its latest run
// has not ended and the box's row says the box is up.
func (b *Box) mainRunning(ctx context.Context) bool {
	st, ok := supervisor.ReadMainState(b.rt.layout.MainState(b.id))
	if ok && st.Ended() {
		return false
	}
	rec, err := b.rt.db.GetBox(ctx, b.id)
	if err != nil {
		return false
	}
	switch Status(rec.Status) {
	case StatusStarting:
		return true
	case StatusRunning, StatusStopping, StatusPaused:
		return ok // a start writes the state before the box counts as running
	}
	return false
}

// followPoll is how often a following reader at the end of the log looks
// for more output.
const followPoll = 100 * time.Millisecond

// followReader reads a growing log until running reports false.
type followReader struct {
	ctx     context.Context
	path    string
	f       *os.File // nil until the log exists
	running func(context.Context) bool
}

func (r *followReader) Read(p []byte) (int, error) {
	for {
		n, err := r.read(p)
		if n > 0 || !errors.Is(err, io.EOF) {
			return n, err
		}
		if !r.running(r.ctx) {
			// The supervisor closes the log before it records the end:
			// what is in the file now is everything.
			n, err := r.read(p)
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		select {
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		case <-time.After(followPoll):
		}
	}
}

// read reads from the log, opening it first when it has appeared; a
// missing log reads as empty.
func (r *followReader) read(p []byte) (int, error) {
	if r.f == nil {
		f, err := os.Open(r.path)
		if errors.Is(err, os.ErrNotExist) {
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		r.f = f
	}
	return r.f.Read(p)
}

func (r *followReader) Close() error {
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}

// mainProcess is the supervisor's description of the box's main process,
// nil for a box without one.
func (b *Box) mainProcess() (*supervisor.MainProcess, error) {
	if !b.opts.MainProcess {
		return nil, nil
	}
	c, err := b.Command()
	if err != nil {
		return nil, err
	}
	return &supervisor.MainProcess{
		Name:       c.Name,
		Args:       c.Args,
		Env:        b.opts.Env,
		WorkingDir: b.opts.WorkingDir,
		User:       b.opts.User,
		Log:        b.rt.layout.MainLog(b.id),
		State:      b.rt.layout.MainState(b.id),
	}, nil
}

// mainInfo fills the main process's part of info.
func (b *Box) mainInfo(info *BoxInfo) {
	if !b.opts.MainProcess {
		return
	}
	if c, err := b.Command(); err == nil {
		info.MainCommand = append([]string{c.Name}, c.Args...)
	}
	if st, ok := supervisor.ReadMainState(b.rt.layout.MainState(b.id)); ok && st.Ended() {
		info.ExitCode, info.FinishedAt = st.ExitCode, st.FinishedAt
	}
}

// mainEnded reports whether the box's main process's latest run has ended:
// the box then stopped because of it, not unexpectedly.
func (b *Box) mainEnded() bool {
	if !b.opts.MainProcess {
		return false
	}
	st, ok := supervisor.ReadMainState(b.rt.layout.MainState(b.id))
	return ok && st.Ended() && !st.Killed
}

// Wait blocks until the box is stopped (or was never started) and returns
// how its main process's latest run ended, as docker wait does; the zero
// ExecResult for a box without a main process. It works alike for boxes
// this process runs and boxes another process runs.
func (b *Box) Wait(ctx context.Context) (ExecResult, error) {
	for {
		rec, err := b.rt.db.GetBox(ctx, b.id)
		if err != nil {
			return ExecResult{}, fmt.Errorf("box %s: wait: %w", b.label(), err)
		}
		if _, err := b.rt.boxFor(rec); err != nil { // refreshes a box run elsewhere
			return ExecResult{}, err
		}
		b.mu.Lock()
		st := b.status
		b.mu.Unlock()
		if st == StatusStopped || st == StatusConfigured {
			var res ExecResult
			if s, ok := supervisor.ReadMainState(b.rt.layout.MainState(b.id)); ok && s.Ended() && b.opts.MainProcess {
				res.ExitCode, res.Signal = s.ExitCode, s.Signal
			}
			return res, nil
		}
		select {
		case <-ctx.Done():
			return ExecResult{}, ctx.Err()
		case <-time.After(followPoll):
		}
	}
}
