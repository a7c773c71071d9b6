package boxlite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-go/boxlite/internal/agent/client"
	"github.com/boxlite-go/boxlite/internal/agent/proto"
)

// Execution is a command running in a box. Its output is buffered as it
// arrives, so Wait returns even when Stdout and Stderr are never read.
type Execution struct {
	box     *Box
	machine machine
	proc    *client.Process
}

// Exec starts cmd in the running box. The box's Env, WorkingDir and User
// apply unless cmd overrides them. A program that is not found ends with
// exit code 127 (126 when it cannot be executed) and a message on Stderr,
// as in a shell; an unknown user fails with ErrUnknownUser.
func (b *Box) Exec(ctx context.Context, cmd Command) (*Execution, error) {
	if cmd.Name == "" {
		return nil, fmt.Errorf("box %s: exec: empty command: %w", b.label(), ErrInvalidArgument)
	}
	if cmd.Timeout < 0 || cmd.KillGrace < 0 || cmd.Rows < 0 || cmd.Cols < 0 {
		return nil, fmt.Errorf("box %s: exec: negative timeout or size: %w", b.label(), ErrInvalidArgument)
	}
	for _, kv := range cmd.Env {
		if strings.HasPrefix(kv, "=") || !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("box %s: exec: env %q: want KEY=VALUE: %w", b.label(), kv, ErrInvalidArgument)
		}
	}
	agent, m, err := b.running()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	start := &proto.ExecStart{
		Name:        cmd.Name,
		Args:        cmd.Args,
		Env:         mergeEnv(b.opts.Env, cmd.Env),
		WorkingDir:  firstNonEmpty(cmd.WorkingDir, b.opts.WorkingDir),
		User:        firstNonEmpty(cmd.User, b.opts.User),
		Tty:         cmd.TTY,
		TimeoutMs:   cmd.Timeout.Milliseconds(),
		KillGraceMs: cmd.KillGrace.Milliseconds(),
		Rows:        uint32(cmd.Rows),
		Cols:        uint32(cmd.Cols),
	}
	if cmd.Timeout > 0 && start.TimeoutMs == 0 {
		start.TimeoutMs = 1
	}
	if start.KillGraceMs == 0 {
		start.KillGraceMs = DefaultKillGrace.Milliseconds()
	}
	if cmd.TTY && start.Rows == 0 {
		start.Rows, start.Cols = 24, 80
	}
	proc, err := agent.Exec(ctx, start, cmd.Stdin)
	if err != nil {
		return nil, fmt.Errorf("box %s: exec %q: %w", b.label(), cmd.Name, b.explain(m, err))
	}
	return &Execution{box: b, machine: m, proc: proc}, nil
}

// explain replaces a broken-connection error by the reason the VM ended,
// when it did.
func (b *Box) explain(m machine, err error) error {
	if !errors.Is(err, ErrBoxDown) {
		return err
	}
	select {
	case <-m.Done():
	case <-time.After(3 * time.Second):
		return err
	}
	if merr := m.Err(); merr != nil {
		return fmt.Errorf("%w: %w", ErrBoxDown, merr)
	}
	return err
}

// Stdout streams the command's standard output (everything, with TTY).
func (e *Execution) Stdout() io.Reader { return e.proc.Stdout() }

// Stderr streams the command's standard error (empty with TTY).
func (e *Execution) Stderr() io.Reader { return e.proc.Stderr() }

// PID is the process id inside the box.
func (e *Execution) PID() int { return e.proc.PID() }

// Wait blocks until the command ends or ctx does. When the box goes down
// first, the error wraps ErrBoxDown (and ErrGuestPanic for a kernel panic).
func (e *Execution) Wait(ctx context.Context) (ExecResult, error) {
	exit, err := e.proc.Wait(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ExecResult{}, err
		}
		return ExecResult{}, fmt.Errorf("box %s: exec: %w", e.box.label(), e.box.explain(e.machine, err))
	}
	return ExecResult{ExitCode: int(exit.ExitCode), Signal: int(exit.Signal), TimedOut: exit.TimedOut}, nil
}

// Signal sends sig to the command's process group.
func (e *Execution) Signal(ctx context.Context, sig syscall.Signal) error {
	return e.proc.Signal(sig)
}

// Kill sends SIGKILL to the command's process group.
func (e *Execution) Kill(ctx context.Context) error {
	return e.proc.Signal(syscall.SIGKILL)
}

// ResizeTTY changes the terminal size of a TTY command.
func (e *Execution) ResizeTTY(ctx context.Context, rows, cols int) error {
	if rows <= 0 || cols <= 0 || rows > 65535 || cols > 65535 {
		return fmt.Errorf("tty size %dx%d: %w", rows, cols, ErrInvalidArgument)
	}
	return e.proc.Resize(rows, cols)
}

// Close abandons the command; the box kills it.
func (e *Execution) Close() error {
	e.proc.Close()
	return nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
