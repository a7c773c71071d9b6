package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// Handle is the host program's view of a supervised box: it reaches the
// agent through the supervisor's socket and learns from the lock and exit
// files when and why the VM ended. It serves the supervisor's own parent
// and any other process alike.
type Handle struct {
	dir     string
	supPID  int
	qemuPID int
	done    chan struct{}
	waitErr error // the supervisor's wait status, for a child
	err     error // why the VM ended, read when the supervisor went
}

// Start re-executes the running program as the supervisor of the box
// described by cfg and returns once the guest agent answers. A detached
// supervisor runs in its own session and survives this process; an
// attached one is killed with it (Pdeathsig). On error nothing is left
// running.
func Start(ctx context.Context, cfg Config, detach bool) (*Handle, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	cfg.Machine.Logger = nil
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Args = []string{"boxlite-supervisor", cfg.Machine.Name}
	cmd.Env = append(os.Environ(), Env+"="+string(raw))
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	// Our own pipe, not cmd.StdoutPipe: Wait (in run) would close that
	// one and could lose the supervisor's last line.
	stdout, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	cmd.Stdout = pw
	h := &Handle{dir: cfg.Machine.Dir, done: make(chan struct{})}
	started := make(chan error, 1)
	go h.run(cmd, started, !detach)
	err = <-started
	pw.Close()
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	h.supPID = cmd.Process.Pid

	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if pid, ok := strings.CutPrefix(s, "ready "); ok {
			h.qemuPID, _ = strconv.Atoi(pid)
			return h, nil
		}
		_ = h.Kill()
		if msg, ok := strings.CutPrefix(s, "error "); ok {
			return nil, h.startError(msg)
		}
		return nil, fmt.Errorf("supervisor ended before the box was up: %v", h.waitErr)
	case <-ctx.Done():
		_ = h.Kill()
		return nil, ctx.Err()
	}
}

// startError turns a supervisor's boot error back into a typed one: the
// supervisor prints its error's text, in which the sentinel's own text
// tells which one it wrapped.
func (h *Handle) startError(msg string) error {
	if rec, ok := readExit(h.dir); ok && rec.Panic {
		return fmt.Errorf("%s: %w", msg, errdefs.ErrGuestPanic)
	}
	for _, sentinel := range []error{errdefs.ErrMissingDependency, errdefs.ErrInvalidArgument,
		errdefs.ErrUnknownUser, errdefs.ErrPortInUse, errdefs.ErrPermission, errdefs.ErrNetwork} {
		if strings.Contains(msg, sentinel.Error()) {
			return typed(msg, sentinel)
		}
	}
	if strings.HasPrefix(msg, "main process") && strings.Contains(msg, errdefs.ErrNotFound.Error()) {
		return typed(msg, errdefs.ErrNotFound) // its working directory
	}
	return errors.New(msg)
}

// typed is msg matching sentinel, which it names already or gets appended.
func typed(msg string, sentinel error) error {
	if strings.HasSuffix(msg, sentinel.Error()) {
		return typedError{msg, sentinel}
	}
	return fmt.Errorf("%s: %w", msg, sentinel)
}

type typedError struct {
	msg      string
	sentinel error
}

func (e typedError) Error() string { return e.msg }
func (e typedError) Unwrap() error { return e.sentinel }

// run starts the supervisor from a locked thread (Pdeathsig fires when the
// starting thread ends) and reaps it.
func (h *Handle) run(cmd *exec.Cmd, started chan<- error, tie bool) {
	if tie {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
	}
	if err := cmd.Start(); err != nil {
		started <- err
		return
	}
	started <- nil
	h.waitErr = cmd.Wait()
	h.err = h.readErr()
	close(h.done)
}

// Attach returns a handle to a box supervised by another process: the
// parent of the QEMU process qemuPID. It fails with ErrBoxDown when that
// supervisor is gone.
func Attach(dir string, qemuPID int) (*Handle, error) {
	sup, err := parentPID(qemuPID)
	if err != nil || !locked(dir) {
		return nil, fmt.Errorf("supervisor of VM pid %d is gone: %w", qemuPID, errdefs.ErrBoxDown)
	}
	h := &Handle{dir: dir, supPID: sup, qemuPID: qemuPID, done: make(chan struct{})}
	go func() {
		for locked(dir) {
			time.Sleep(50 * time.Millisecond)
		}
		h.err = h.readErr()
		close(h.done)
	}()
	return h, nil
}

// locked reports whether a supervisor holds the run directory's lock.
func locked(dir string) bool {
	f, err := os.Open(filepath.Join(dir, LockName))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

func parentPID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, errors.New("malformed stat")
	}
	return strconv.Atoi(f[1])
}

// DialAgent connects to the supervisor's Agent proxy.
func (h *Handle) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", filepath.Join(h.dir, SocketName))
}

// PID is the QEMU process id.
func (h *Handle) PID() int { return h.qemuPID }

// SupervisorPID is the supervisor's process id.
func (h *Handle) SupervisorPID() int { return h.supPID }

// Done is closed when the supervisor has exited.
func (h *Handle) Done() <-chan struct{} { return h.done }

// Err tells why the VM ended, once Done is closed: nil after a requested
// stop or a guest power-off.
func (h *Handle) Err() error {
	select {
	case <-h.done:
		return h.err
	default:
		return nil
	}
}

// readErr reads the exit file, once the supervisor is gone: the run
// directory may be removed right after Done closes.
func (h *Handle) readErr() error {
	rec, ok := readExit(h.dir)
	switch {
	case !ok:
		return fmt.Errorf("box supervisor (pid %d) died without a word (%v): %w", h.supPID, h.waitErr, errdefs.ErrBoxDown)
	case rec.Clean:
		return nil
	case rec.Panic:
		return fmt.Errorf("%s: %w: %w", rec.Message, errdefs.ErrBoxDown, errdefs.ErrGuestPanic)
	}
	return fmt.Errorf("%s: %w", rec.Message, errdefs.ErrBoxDown)
}

func readExit(dir string) (exitRecord, bool) {
	var rec exitRecord
	b, err := os.ReadFile(filepath.Join(dir, ExitName))
	if err != nil || json.Unmarshal(b, &rec) != nil {
		return rec, false
	}
	return rec, true
}

// Stop asks the supervisor to shut the box down gracefully and waits; at
// ctx's deadline it kills supervisor and VM.
func (h *Handle) Stop(ctx context.Context) error {
	_ = syscall.Kill(h.supPID, syscall.SIGTERM)
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
	}
	return h.Kill()
}

// killReapGrace is how long Kill lets the supervisor reap the killed VM and
// record the box stopped before it kills the supervisor too.
const killReapGrace = 2 * time.Second

// Kill ends the VM at once and waits for the supervisor. The VM goes
// first, so that the supervisor, its parent, reaps it and records the box
// stopped on its way out: killed together, the VM would be left a zombie
// for PID 1 to reap, which on some hosts takes seconds. A supervisor that
// does not follow within killReapGrace, or one without a VM yet, is killed.
func (h *Handle) Kill() error {
	select {
	case <-h.done:
		return nil // gone: its pids may belong to others now
	default:
	}
	if h.qemuPID > 0 {
		_ = syscall.Kill(h.qemuPID, syscall.SIGKILL)
		select {
		case <-h.done:
			return nil
		case <-time.After(killReapGrace):
		}
	}
	if h.supPID > 0 {
		_ = syscall.Kill(h.supPID, syscall.SIGKILL)
	}
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		return errors.New("supervisor did not exit")
	}
	return nil
}
