package guest

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Timer slack.
//
// The Go runtime's monitor thread (sysmon) sleeps 20 µs at a time, fifty
// times in a row, whenever the process wakes from idle, and the agent wakes
// from idle at least twice per exec (the request; the child's exit). Under
// software emulation each of those sleeps costs a timer interrupt and two
// context switches, and together they were a third of the guest's context
// switches and a fifth of the CPU an exec cost. The agent's threads
// therefore run with a timer slack of agentTimerSlack, which lets the kernel
// stretch those sleeps to one tick (4 ms at the Debian kernel's 250 Hz):
// measured per exec of busybox `true`, the monitor then woke 4 times and
// used 1.1 ms of the guest's CPU, against 7 times and 1.8 ms with a slack
// of 1 ms (exec p50 −5% in the same run). Its duties (taking the processor
// back from a blocked system call, preempting a goroutine that ran 10 ms)
// are delayed by at most the slack, and the agent's own timers (deadlines
// of seconds or hundreds of ms) do not mind.
//
// Processes the agent starts must not inherit it: a thread passes its slack
// to the processes it forks, and execve keeps it. forkExec therefore sets
// the forking thread's slack back to childTimerSlack first.
const (
	agentTimerSlack = 4 * time.Millisecond
	childTimerSlack = 50 * time.Microsecond // the kernel's value for init
)

// raiseTimerSlack gives every thread of the process agentTimerSlack;
// threads created later inherit it from the thread that creates them.
// /proc must be mounted.
func raiseTimerSlack() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	value := []byte(strconv.FormatInt(agentTimerSlack.Nanoseconds(), 10))
	var errs []error
	for _, t := range tasks {
		// /proc/<tid>/timerslack_ns is the thread's own (current) value.
		if err := os.WriteFile(filepath.Join("/proc", t.Name(), "timerslack_ns"), value, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forkExec is syscall.ForkExec from a thread whose timer slack is
// childTimerSlack, so the child starts with the usual slack. The thread
// gets agentTimerSlack back afterwards: any of the agent's threads may
// fork, and each would otherwise keep the child's slack for good.
func forkExec(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setThreadSlack(childTimerSlack); err != nil {
		return 0, err
	}
	defer setThreadSlack(agentTimerSlack)
	return syscall.ForkExec(argv0, argv, attr)
}

// setThreadSlack sets the calling thread's timer slack.
func setThreadSlack(d time.Duration) error {
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d.Nanoseconds()), 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl", err)
	}
	return nil
}
