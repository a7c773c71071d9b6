package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/boxlite-go/boxlite/internal/agent/client"
	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
	"github.com/boxlite-go/boxlite/internal/store"
	"github.com/boxlite-go/boxlite/internal/vmm/qemu"
)

// MainProcess is a box's main process (docker's container process): the
// supervisor starts it through the agent right after boot, appends its
// stdout and stderr to Log, keeps the state of the run in State, and stops
// the box when it exits.
type MainProcess struct {
	Name       string   `json:"name"`
	Args       []string `json:"args,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	// Log receives the output of every run (appended); State holds the
	// MainState of the latest run.
	Log   string `json:"log"`
	State string `json:"state"`
}

// MainState is the state of a main process's latest run, as its State
// file holds it. The supervisor writes it when the process starts (a new
// run clears the previous exit) and again, before it stops the box, when
// the process has ended.
type MainState struct {
	StartedAt time.Time `json:"startedAt"`
	PID       int       `json:"pid,omitempty"` // in the guest
	// FinishedAt is zero while the process runs (or when its supervisor
	// died before it ended).
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	// ExitCode is the exit status, 128+n for a death by signal n.
	ExitCode int `json:"exitCode"`
	Signal   int `json:"signal,omitempty"`
	// Killed: the process never reported its end because the box went
	// down under it; ExitCode is then 137, as docker reports a container
	// killed at the end of its stop timeout.
	Killed bool `json:"killed,omitempty"`
}

// Ended reports whether the run has ended.
func (s MainState) Ended() bool { return !s.FinishedAt.IsZero() }

// ReadMainState reads a State file; ok is false when there is none (the
// main process never started) or it cannot be parsed.
func ReadMainState(path string) (s MainState, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &s) != nil {
		return MainState{}, false
	}
	return s, true
}

// WriteMainState replaces a State file atomically.
func WriteMainState(path string, s MainState) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// mainRun is one run of the main process.
type mainRun struct {
	cfg  *MainProcess
	proc *client.Process
	out  *os.File
	log  *slog.Logger
	done chan struct{} // closed once the end is recorded

	termMu       sync.Mutex
	termDeadline time.Time // end of the grace the first SIGTERM gave
}

// mainStopGrace is how long a stop of the box waits for the main process
// to end after SIGTERM before the guest powers off under it.
const mainStopGrace = 5 * time.Second

// mainKillGrace is how long the main process gets between SIGTERM and
// SIGKILL when the guest enforces a kill.
const mainKillGrace = 2 * time.Second

// startMain starts the main process and records the start. An error wraps
// the agent's (unknown user, missing working directory, ...).
func startMain(ctx context.Context, agent *client.Client, cfg *MainProcess, log *slog.Logger) (*mainRun, error) {
	out, err := os.OpenFile(cfg.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("main process: log: %w", err)
	}
	proc, err := agent.Exec(ctx, &pb.ExecStart{
		Name:        cfg.Name,
		Args:        cfg.Args,
		Env:         cfg.Env,
		WorkingDir:  cfg.WorkingDir,
		User:        cfg.User,
		KillGraceMs: mainKillGrace.Milliseconds(),
	}, nil)
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("main process %q: %w", cfg.Name, err)
	}
	st := MainState{StartedAt: time.Now(), PID: proc.PID()}
	if err := WriteMainState(cfg.State, st); err != nil {
		proc.Close()
		out.Close()
		return nil, fmt.Errorf("main process: state: %w", err)
	}
	r := &mainRun{cfg: cfg, proc: proc, out: out, log: log, done: make(chan struct{})}
	log.Info("main process started", "name", cfg.Name, "pid", proc.PID())
	go r.wait(st)
	return r, nil
}

// lockedWriter serializes the two output streams' writes to one file.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// wait copies the output to the log until the process ends, then records
// how it ended.
func (r *mainRun) wait(st MainState) {
	defer close(r.done)
	w := &lockedWriter{w: r.out}
	var copies sync.WaitGroup
	for _, src := range []io.Reader{r.proc.Stdout(), r.proc.Stderr()} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			io.Copy(w, src)
		}()
	}
	exit, err := r.proc.Wait(context.Background())
	copies.Wait() // the output buffers end with the process
	r.out.Sync()
	r.out.Close()
	st.FinishedAt = time.Now()
	if err != nil {
		st.ExitCode, st.Signal, st.Killed = 128+int(syscall.SIGKILL), int(syscall.SIGKILL), true
	} else {
		st.ExitCode, st.Signal = int(exit.ExitCode), int(exit.Signal)
	}
	if werr := WriteMainState(r.cfg.State, st); werr != nil {
		r.log.Error("main process: state", "err", werr)
	}
	r.log.Info("main process ended", "exit", st.ExitCode, "killed", st.Killed, "err", err)
}

// terminate sends SIGTERM to the main process's group and waits up to
// grace for its end to be recorded, as docker stop does; the shutdown that
// follows ends whatever is left. A second call (a stop through the agent
// proxy, then SIGTERM to the supervisor) waits only for the rest of the
// first grace.
func (r *mainRun) terminate(grace time.Duration) {
	if r == nil {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	r.termMu.Lock()
	if r.termDeadline.IsZero() {
		r.log.Info("stopping main process", "grace", grace)
		r.termDeadline = time.Now().Add(grace)
		_ = r.proc.Signal(syscall.SIGTERM)
	}
	wait := time.Until(r.termDeadline)
	r.termMu.Unlock()
	select {
	case <-r.done:
	case <-time.After(wait):
	}
}

// ended is closed once the main process's end is recorded; never for a
// box without one.
func (r *mainRun) ended() <-chan struct{} {
	if r == nil {
		return nil
	}
	return r.done
}

// awaitStartRecorded waits, up to timeout, until the box's row holds the
// VM's pid: the Start that booted the box has connected and recorded it
// running. A main process that ends at once would otherwise stop the box
// under that Start (it could find the box gone before it returns), and the
// stop recorded here could be overwritten by the Start's record.
func awaitStartRecorded(cfg Config, m *qemu.Machine, timeout time.Duration) {
	if cfg.Home == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	db, err := store.Open(ctx, store.Layout{Home: cfg.Home})
	if err != nil {
		return
	}
	defer db.Close()
	for {
		b, err := db.GetBox(ctx, cfg.BoxID)
		if err != nil || b.PID == m.PID() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-m.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
