package guest

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is a child started by a reaper. Its pid stays valid (and is never
// reused) until reaped is set, which happens under mu: signalGroup holds mu,
// so it can never hit a recycled pid.
type process struct {
	pid  int
	done chan struct{} // closed once status is set

	mu     sync.Mutex
	reaped bool
	status unix.WaitStatus
}

func newProcess(pid int) *process {
	return &process{pid: pid, done: make(chan struct{})}
}

// signalGroup sends sig to the process group led by the process (started
// with Setsid, so pgid == pid). It is a no-op once the leader is reaped.
func (p *process) signalGroup(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return nil
	}
	err := unix.Kill(-p.pid, sig)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

func (p *process) setStatus(ws unix.WaitStatus) {
	p.mu.Lock()
	p.reaped, p.status = true, ws
	p.mu.Unlock()
	close(p.done)
}

// reaper starts processes and reports their exit status.
type reaper interface {
	start(argv0 string, argv []string, attr *syscall.ProcAttr) (*process, error)
}

// childReaper waits for each child with wait4(pid) in its own goroutine. It
// is the mode for an agent that is not PID 1 (tests): it leaves every other
// child of the process alone.
type childReaper struct{}

func (childReaper) start(argv0 string, argv []string, attr *syscall.ProcAttr) (*process, error) {
	pid, err := forkExec(argv0, argv, attr)
	if err != nil {
		return nil, err
	}
	p := newProcess(pid)
	go func() {
		// Wait without reaping, then reap under p.mu so that signalGroup
		// never races with the pid being freed.
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err != unix.EINTR {
				break
			}
		}
		p.mu.Lock()
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
		p.reaped, p.status = true, ws
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// initReaper is the PID 1 mode: on every SIGCHLD it reaps all exited
// children with wait4(-1, WNOHANG), dispatching statuses of the processes it
// started and discarding those of orphans reparented to init. Starting and
// reaping share one lock, so a child is registered before it can be reaped
// and no pid is recycled between a reap and its dispatch.
type initReaper struct {
	mu    sync.Mutex
	procs map[int]*process
}

func newInitReaper() *initReaper {
	r := &initReaper{procs: make(map[int]*process)}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		r.reapAll()
		for range sigs {
			r.reapAll()
		}
	}()
	return r
}

func (r *initReaper) start(argv0 string, argv []string, attr *syscall.ProcAttr) (*process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := forkExec(argv0, argv, attr)
	if err != nil {
		return nil, err
	}
	p := newProcess(pid)
	r.procs[pid] = p
	return p, nil
}

func (r *initReaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD or nothing more has exited
		}
		if p, ok := r.procs[pid]; ok {
			delete(r.procs, pid)
			p.setStatus(ws)
		}
	}
}
