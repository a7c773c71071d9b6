package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/boxlite-go/boxlite/internal/vmm"
)

// Binary is the QEMU program New looks up in $PATH.
const Binary = "qemu-system-x86_64"

// Names of the files in a machine's directory.
const (
	QMPSocketName   = "qmp.sock"
	AgentSocketName = "agent.sock"
	ConsoleLogName  = "console.log"
)

// Defaults for zero Config fields.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 512
)

const (
	// maxSocketPath is the longest unix socket path (sun_path less its
	// terminating NUL).
	maxSocketPath = 107
	// stderrTail is how much of QEMU's output is kept for error messages.
	stderrTail = 4 << 10
	// consoleTail is how much of the console log is searched for a panic.
	consoleTail = 64 << 10
	// consoleMax caps the console log: past it, the log moves to
	// console.log.1 (replacing an older one) and starts over, checked
	// every consoleCheck. A guest cannot fill the host's disk through
	// its console.
	consoleMax   = 8 << 20
	consoleCheck = 2 * time.Second
	// retryInterval paces the polling of QEMU's sockets.
	retryInterval = 5 * time.Millisecond
)

var _ vmm.Machine = (*Machine)(nil)

// Machine is a QEMU virtual machine. It is safe for concurrent use.
type Machine struct {
	name   string
	params Params
	log    *slog.Logger
	output *tailBuffer // QEMU's stdout and stderr
	done   chan struct{}

	startOnce atomic.Bool
	pid       atomic.Int64
	// requested is set when the owner ends the machine (Stop or Kill), so
	// that the end is not reported as a failure.
	requested atomic.Bool

	mu      sync.Mutex
	process *os.Process
	mon     *monitor
	reaped  bool  // the reaper has taken mon; Start must not set it
	cause   error // why Start gave up, reported by Err
	end     error // why the machine ended, without the subject
	err     error // Err's value, set before done is closed

	diskTop   string // block node of the first disk's active layer
	snapshots int    // overlays added by SnapshotDisk
}

// New checks cfg and resolves it into a machine that is not started yet:
// QEMU is looked up in $PATH, the accelerator is detected unless cfg.Accel
// names one, and under TCG the host's TSC frequency is measured. The
// machine type is microvm when cfg.Kernel is an ELF vmlinux (QEMU boots
// it through its PVH entry point) and q35 for a bzImage, or when TCG's
// microvm lacks a TSC frequency. When cfg.ConsoleLog is empty the console
// goes to console.log in cfg.Dir: a kernel panic is recognised there.
func New(cfg vmm.Config) (*Machine, error) {
	subject := fmt.Sprintf("machine %q", cfg.Name)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("machine", cfg.Name)

	if cfg.Dir == "" {
		return nil, fmt.Errorf("%s: no directory: %w", subject, errdefs.ErrInvalidArgument)
	}
	if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s: directory %q: not a directory: %w", subject, cfg.Dir, errdefs.ErrInvalidArgument)
	}
	for _, name := range []string{QMPSocketName, AgentSocketName} {
		if p := filepath.Join(cfg.Dir, name); len(p) > maxSocketPath {
			return nil, fmt.Errorf("%s: socket path %q longer than %d bytes: %w", subject, p, maxSocketPath, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.CPUs < 0 || cfg.MemoryMiB < 0 {
		return nil, fmt.Errorf("%s: negative cpus or memory: %w", subject, errdefs.ErrInvalidArgument)
	}
	if cfg.Kernel == "" {
		return nil, fmt.Errorf("%s: no kernel: %w", subject, errdefs.ErrInvalidArgument)
	}
	if cfg.Initrd == "" {
		return nil, fmt.Errorf("%s: no initrd: %w", subject, errdefs.ErrInvalidArgument)
	}
	elf, err := isELF(cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("%s: kernel: %w: %w", subject, err, errdefs.ErrMissingDependency)
	}
	if err := checkFile(cfg.Initrd); err != nil {
		return nil, fmt.Errorf("%s: initrd: %w: %w", subject, err, errdefs.ErrMissingDependency)
	}
	for _, d := range cfg.Disks {
		if d.Format != "" && d.Format != "raw" && d.Format != "qcow2" {
			return nil, fmt.Errorf("%s: disk %q: unknown format %q: %w", subject, d.Path, d.Format, errdefs.ErrInvalidArgument)
		}
		if err := checkFile(d.Path); err != nil {
			return nil, fmt.Errorf("%s: disk: %w: %w", subject, err, errdefs.ErrInvalidArgument)
		}
	}
	binary, err := exec.LookPath(Binary)
	if err != nil {
		return nil, fmt.Errorf("%s: %s not found in $PATH (install it: apt-get install qemu-system-x86): %w", subject, Binary, errdefs.ErrMissingDependency)
	}

	accel := cfg.Accel
	switch accel {
	case "":
		accel = DetectAccel()
	case AccelKVM, AccelTCG:
	default:
		return nil, fmt.Errorf("%s: unknown accelerator %q (want %q or %q): %w", subject, accel, AccelKVM, AccelTCG, errdefs.ErrInvalidArgument)
	}
	tsc := cfg.TSCKHz
	if accel == AccelTCG && elf && tsc <= 0 {
		if tsc, err = TSCKHz(); err != nil {
			log.Warn("host tsc frequency unknown; falling back to q35", "err", err)
		}
	}

	p := Params{
		Binary:      binary,
		Name:        cfg.Name,
		Machine:     MachineMicrovm,
		Accel:       qemuAccel(accel),
		TSCKHz:      tsc,
		CPUs:        orDefault(cfg.CPUs, DefaultCPUs),
		MemoryMiB:   orDefault(cfg.MemoryMiB, DefaultMemoryMiB),
		Kernel:      cfg.Kernel,
		Initrd:      cfg.Initrd,
		Disks:       cfg.Disks,
		NIC:         cfg.NIC,
		QMPSocket:   filepath.Join(cfg.Dir, QMPSocketName),
		AgentSocket: filepath.Join(cfg.Dir, AgentSocketName),
		ConsoleLog:  cfg.ConsoleLog,
	}
	if !elf {
		p.Machine = MachineQ35
	}
	if p.ConsoleLog == "" {
		p.ConsoleLog = filepath.Join(cfg.Dir, ConsoleLogName)
	}
	p.Cmdline = KernelCmdline(p.MachineType() == MachineMicrovm, p.IsTCG(), p.TSCKHz, cfg.Cmdline)

	return &Machine{
		name:   cfg.Name,
		params: p,
		log:    log,
		output: newTailBuffer(stderrTail),
		done:   make(chan struct{}),
	}, nil
}

// Params returns the resolved parameters the machine runs QEMU with.
func (m *Machine) Params() Params { return m.params }

// Start runs QEMU and returns once its QMP monitor answers and reports the
// VM running; the guest boots in the background. On error QEMU has been
// killed and reaped. A machine starts once.
func (m *Machine) Start(ctx context.Context) error {
	if m.startOnce.Swap(true) {
		return fmt.Errorf("machine %q: start: already started: %w", m.name, errdefs.ErrInvalidState)
	}
	for _, p := range []string{m.params.QMPSocket, m.params.AgentSocket} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return m.startFailed(fmt.Errorf("remove stale socket: %w", err))
		}
	}
	if p := m.params.ConsoleLog; p != "" {
		// QEMU appends (so the log can be trimmed under it); each start
		// begins a fresh log.
		if err := os.Truncate(p, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return m.startFailed(fmt.Errorf("console log: %w", err))
		}
	}
	argv := Argv(m.params)
	m.log.Debug("starting qemu", "machine_type", m.params.MachineType(), "argv", argv)
	cmd := &exec.Cmd{
		Path:   argv[0],
		Args:   argv,
		Stdout: m.output,
		Stderr: m.output,
		SysProcAttr: &syscall.SysProcAttr{
			Pdeathsig: syscall.SIGKILL,
			Setpgid:   true,
		},
		WaitDelay: time.Second,
	}
	started := make(chan error, 1)
	go m.run(cmd, started)
	if err := <-started; err != nil {
		return m.startFailed(err)
	}
	if m.params.ConsoleLog != "" {
		go capLog(m.params.ConsoleLog, consoleMax, consoleCheck, m.done)
	}

	type dialed struct {
		mon *monitor
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		mon, err := dialMonitor(ctx, m.params.QMPSocket, m.done)
		ch <- dialed{mon, err}
	}()
	var mon *monitor
	select {
	case d := <-ch:
		if d.err != nil {
			return m.abort(d.err)
		}
		mon = d.mon
	case <-ctx.Done():
		err := m.abort(fmt.Errorf("connect qmp: %w", ctx.Err()))
		if d := <-ch; d.mon != nil {
			d.mon.close()
		}
		return err
	}
	m.mu.Lock()
	if m.reaped {
		m.mu.Unlock()
		mon.close()
		return m.abort(errors.New("qemu exited during start"))
	}
	m.mon = mon
	m.mu.Unlock()

	status, err := mon.queryStatus(ctx)
	if err != nil {
		return m.abort(err)
	}
	if status != "running" {
		return m.abort(fmt.Errorf("vm is %q, not running", status))
	}
	m.log.Info("qemu started", "pid", m.PID(), "machine_type", m.params.MachineType(), "accel", m.params.Accel)
	return nil
}

// run starts QEMU and reaps it. It keeps its OS thread locked and never
// unlocks it: Pdeathsig fires when the thread that started the child
// exits, not the process, and the Go runtime ends idle threads at will.
// The locked thread ends with this goroutine, after QEMU has been reaped.
func (m *Machine) run(cmd *exec.Cmd, started chan<- error) {
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		started <- fmt.Errorf("exec %s: %w", cmd.Path, err)
		return
	}
	m.mu.Lock()
	m.process = cmd.Process
	m.mu.Unlock()
	m.pid.Store(int64(cmd.Process.Pid))
	started <- nil
	m.reap(cmd.Wait())
}

// reap records why the machine ended and closes done.
func (m *Machine) reap(waitErr error) {
	m.mu.Lock()
	m.reaped = true
	mon := m.mon
	cause := m.cause
	m.mu.Unlock()

	var reason, panicInfo string
	var panicked bool
	if mon != nil {
		mon.close()
		reason, panicked, panicInfo = mon.ending()
	}
	end := m.classify(cause, waitErr, reason, panicked, panicInfo)
	m.log.Info("qemu ended", "pid", m.PID(), "wait", waitErr, "shutdown_reason", reason, "err", end)
	m.mu.Lock()
	m.end = end
	if end != nil {
		m.err = fmt.Errorf("machine %q: %w", m.name, end)
	}
	m.mu.Unlock()
	close(m.done)
}

// classify turns how QEMU ended into Err's value, less its subject.
func (m *Machine) classify(cause, waitErr error, reason string, panicked bool, panicInfo string) error {
	if cause != nil {
		return fmt.Errorf("start: %w%s", cause, m.outputSuffix())
	}
	if m.requested.Load() {
		return nil
	}
	if waitErr == nil && reason == "guest-shutdown" && !panicked {
		// A power-off. A panic ends in a reset (panic=-1, -no-reboot),
		// never here: a "Kernel panic" line on the console is then
		// something a guest process wrote, not a panic.
		return nil
	}
	var line string
	if tail, err := fileTail(m.params.ConsoleLog, consoleTail); err == nil {
		line = panicLine(tail)
	}
	if panicked || line != "" {
		if line == "" {
			line = "GUEST_PANICKED " + panicInfo
		}
		return fmt.Errorf("%w: %s (%w)", errdefs.ErrGuestPanic, line, errdefs.ErrBoxDown)
	}
	var ee *exec.ExitError
	switch {
	case waitErr == nil && reason == "guest-reset":
		return fmt.Errorf("guest rebooted: %w", errdefs.ErrBoxDown)
	case waitErr == nil && reason != "":
		return fmt.Errorf("qemu exited after shutdown %q%s: %w", reason, m.outputSuffix(), errdefs.ErrBoxDown)
	case waitErr == nil:
		return fmt.Errorf("qemu exited%s: %w", m.outputSuffix(), errdefs.ErrBoxDown)
	case errors.As(waitErr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("qemu killed by signal %d (%v)%s: %w", int(ws.Signal()), ws.Signal(), m.outputSuffix(), errdefs.ErrBoxDown)
		}
		return fmt.Errorf("qemu exited with status %d%s: %w", ee.ExitCode(), m.outputSuffix(), errdefs.ErrBoxDown)
	default:
		return fmt.Errorf("wait for qemu: %v%s: %w", waitErr, m.outputSuffix(), errdefs.ErrBoxDown)
	}
}

// outputSuffix is ": " and the tail of QEMU's output, or "".
func (m *Machine) outputSuffix() string {
	if s := m.output.String(); s != "" {
		return ": " + s
	}
	return ""
}

// startFailed is Start's error when QEMU did not run; Err reports it too.
func (m *Machine) startFailed(err error) error {
	err = fmt.Errorf("machine %q: start: %w", m.name, err)
	m.mu.Lock()
	m.err, m.reaped = err, true
	m.mu.Unlock()
	close(m.done)
	return err
}

// abort kills a QEMU that did not start properly, waits for it to be
// reaped and returns Start's error, which Err reports too.
func (m *Machine) abort(err error) error {
	m.mu.Lock()
	early := m.reaped // QEMU ended by itself, before the cause was known
	if !early {
		m.cause = err
	}
	p := m.process
	m.mu.Unlock()
	p.Kill()
	<-m.done
	if early {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.end != nil {
			return fmt.Errorf("machine %q: start: %w", m.name, m.end)
		}
		return fmt.Errorf("machine %q: start: %w", m.name, err)
	}
	return m.Err()
}

// DialAgent connects to the guest agent's virtio-serial port, retrying
// every 5 ms until QEMU listens, ctx is done or the machine has ended.
// The dial succeeds as soon as QEMU listens, whether or not the guest has
// opened its end yet: what the host writes waits in QEMU until it does.
// QEMU serves one connection at a time: a second one is accepted by the
// kernel but not served until the first is closed.
func (m *Machine) DialAgent(ctx context.Context) (net.Conn, error) {
	if !m.startOnce.Load() {
		return nil, fmt.Errorf("machine %q: dial agent: not started: %w", m.name, errdefs.ErrInvalidState)
	}
	var d net.Dialer
	for {
		select {
		case <-m.done:
			return nil, m.endedErr()
		default:
		}
		conn, err := d.DialContext(ctx, "unix", m.params.AgentSocket)
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("machine %q: dial agent: %w (last error: %v)", m.name, ctx.Err(), err)
		case <-m.done:
			return nil, m.endedErr()
		case <-time.After(retryInterval):
		}
	}
}

// endedErr is the error of a call that needs a running machine.
func (m *Machine) endedErr() error {
	if err := m.Err(); err != nil {
		return err
	}
	return fmt.Errorf("machine %q: has ended: %w", m.name, errdefs.ErrBoxDown)
}

// PID returns QEMU's process id, 0 before Start.
func (m *Machine) PID() int { return int(m.pid.Load()) }

// Done is closed once QEMU has ended and been reaped (or Start failed).
func (m *Machine) Done() <-chan struct{} { return m.done }

// Err tells why the machine ended, once Done is closed (nil before):
//   - nil after Stop, Kill, or a guest power-off;
//   - an error wrapping errdefs.ErrGuestPanic and errdefs.ErrBoxDown
//     after a kernel panic, holding the console's "Kernel panic" line;
//   - Start's error when Start failed;
//   - otherwise an error wrapping errdefs.ErrBoxDown with QEMU's exit
//     status or signal ("qemu killed by signal 9 (killed)") and the tail
//     of its output.
func (m *Machine) Err() error {
	select {
	case <-m.done:
	default:
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Stop ends the machine with a QMP quit (QEMU exits at once; the guest is
// not asked to shut down) and, if QEMU is still running at ctx's end,
// SIGKILL. It returns nil once QEMU is reaped, also when the machine had
// already ended; Err is then nil unless the machine had ended before.
func (m *Machine) Stop(ctx context.Context) error {
	if !m.startOnce.Load() {
		return fmt.Errorf("machine %q: stop: not started: %w", m.name, errdefs.ErrInvalidState)
	}
	select {
	case <-m.done:
		return nil
	default:
	}
	m.requested.Store(true)
	m.mu.Lock()
	mon, p := m.mon, m.process
	m.mu.Unlock()
	if mon != nil {
		mon.quit()
	} else if p != nil {
		p.Kill()
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		m.log.Warn("qemu did not quit in time; killing it", "pid", m.PID())
		if p != nil {
			p.Kill()
		}
		<-m.done
	}
	return nil
}

// Kill sends QEMU SIGKILL and returns once it is reaped. Err is then nil,
// as after Stop, unless the machine had ended before.
func (m *Machine) Kill() error {
	if !m.startOnce.Load() {
		return fmt.Errorf("machine %q: kill: not started: %w", m.name, errdefs.ErrInvalidState)
	}
	select {
	case <-m.done:
		return nil
	default:
	}
	m.requested.Store(true)
	m.mu.Lock()
	p := m.process
	m.mu.Unlock()
	if p != nil {
		if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("machine %q: kill: %w", m.name, err)
		}
	}
	<-m.done
	return nil
}

// isELF reports whether the file at path is an ELF image.
func isELF(path string) (bool, error) {
	if err := checkFile(path); err != nil {
		return false, err
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return bytes.Equal(magic, []byte("\x7fELF")), nil
}

// checkFile returns an error unless path is a readable regular file.
func checkFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	return nil
}

// orDefault returns v, or def when v is zero.
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// capLog keeps the file at path, which its writer opened for appending,
// under about max bytes until done: a longer file is copied to path+".1"
// and truncated. Lines written between the copy and the truncation are
// lost; the writer's appends land at the new end.
func capLog(path string, max int64, every time.Duration, done <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() <= max {
			continue
		}
		// At most a few MiB over the cap: read whole, once per cap.
		data, err := os.ReadFile(path)
		if err != nil || os.WriteFile(path+".1", data, 0o600) != nil {
			continue
		}
		os.Truncate(path, 0)
	}
}
