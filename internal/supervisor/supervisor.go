package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/boxlite-go/boxlite/internal/agent/client"
	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/boxlite-go/boxlite/internal/store"
	"github.com/boxlite-go/boxlite/internal/vmm"
	"github.com/boxlite-go/boxlite/internal/vmm/qemu"
)

// Env holds the JSON Config of a process that is to be a supervisor.
const Env = "_BOXLITE_SUPERVISOR"

// File names in the box's run directory.
const (
	SocketName  = "box.sock"     // the Agent proxy
	ControlName = "control.sock" // supervisor requests (disk snapshots)
	LockName    = "supervisor.lock"
	ExitName    = "exit.json" // why the VM ended
	LogName     = "supervisor.log"
)

// Config is what a supervisor needs; it travels as JSON in Env.
type Config struct {
	// Machine describes the VM; its Dir is the run directory that also
	// holds the supervisor's socket, lock and exit files.
	Machine     vmm.Config    `json:"machine"`
	BootTimeout time.Duration `json:"bootTimeout"`
	// Debug logs at debug level to the run directory's log file.
	Debug bool `json:"debug,omitempty"`
	// Home and BoxID name the box's row in the metadata store, which the
	// supervisor marks stopped when the VM ends (its parent may be gone).
	Home  string `json:"home"`
	BoxID string `json:"boxID"`
	// Network, when set, gives the box a network card on a user-mode
	// network the supervisor runs; nil: no network card.
	Network *NetConfig `json:"network,omitempty"`
	// Main, when set, is started right after boot; the box stops when it
	// ends.
	Main *MainProcess `json:"main,omitempty"`
}

// exitRecord is the exit file's content.
type exitRecord struct {
	Panic   bool   `json:"panic,omitempty"` // a guest kernel panic
	Clean   bool   `json:"clean,omitempty"` // a requested stop or power-off
	Message string `json:"message,omitempty"`
}

// Main runs a supervisor from the JSON in raw and returns its exit code.
// It prints "ready <qemu pid>" on stdout once the guest agent answers,
// or "error <message>" if the box could not start.
func Main(raw string) int {
	var cfg Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Printf("error supervisor config: %v\n", err)
		return 2
	}
	dir := cfg.Machine.Dir
	logf, err := os.OpenFile(filepath.Join(dir, LogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Printf("error supervisor log: %v\n", err)
		return 2
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: level}))
	cfg.Machine.Logger = log

	lock, err := os.OpenFile(filepath.Join(dir, LockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		fmt.Printf("error supervisor lock: %v\n", err)
		return 2
	}
	os.Remove(filepath.Join(dir, ExitName))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	var nw *network
	if cfg.Network != nil {
		if nw, err = startNetwork(&cfg, log); err != nil {
			log.Error("network", "err", err)
			writeExit(dir, err)
			fmt.Printf("error %v\n", err)
			return 1
		}
		defer nw.close()
	}

	m, agent, err := bootWithRetry(cfg, log)
	if err != nil {
		log.Error("boot", "err", err)
		writeExit(dir, err)
		fmt.Printf("error %v\n", err)
		return 1
	}
	if nw != nil {
		if err := nw.configure(cfg, agent); err != nil {
			log.Error("network", "err", err)
			_ = m.Kill()
			writeExit(dir, err)
			fmt.Printf("error %v\n", err)
			return 1
		}
	}
	var mr *mainRun
	if cfg.Main != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		mr, err = startMain(ctx, agent, cfg.Main, log)
		cancel()
		if err != nil {
			log.Error("boot", "err", err)
			stop(m, agent)
			writeExit(dir, err)
			fmt.Printf("error %v\n", err)
			return 1
		}
	}
	os.Remove(filepath.Join(dir, SocketName))
	l, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		_ = m.Kill()
		writeExit(dir, err)
		fmt.Printf("error listen: %v\n", err)
		return 1
	}
	srv := grpc.NewServer()
	pb.RegisterAgentServer(srv, &proxy{up: agent.API(), main: mr})
	go srv.Serve(l)
	os.Remove(filepath.Join(dir, ControlName))
	ctl, err := net.Listen("unix", filepath.Join(dir, ControlName))
	if err != nil {
		_ = m.Kill()
		writeExit(dir, err)
		fmt.Printf("error listen: %v\n", err)
		return 1
	}
	defer ctl.Close()
	go serveControl(ctl, m, agent, nw, log)
	fmt.Printf("ready %d\n", m.PID())
	os.Stdout.Close()
	log.Info("box up", "qemu", m.PID())

	select {
	case <-m.Done():
	case sig := <-sigs:
		log.Info("stopping", "signal", sig)
		mr.terminate(mainStopGrace)
		stop(m, agent)
	case <-mr.ended():
		// The box ends with its main process, once the Start that
		// booted it has recorded the box running.
		awaitStartRecorded(cfg, m, 10*time.Second)
		log.Info("main process ended: stopping the box")
		stop(m, agent)
	}
	<-m.Done()
	srv.Stop()
	agent.Close()
	if mr != nil {
		select { // the end of a main process the box stopped under
		case <-mr.done:
		case <-time.After(5 * time.Second):
		}
	}
	writeExit(dir, m.Err())
	if err := recordStopped(cfg, m.PID(), m.Err()); err != nil {
		log.Error("record stop", "err", err)
	}
	log.Info("box down", "err", m.Err())
	return 0
}

// recordStopped marks the box stopped in the store, unless its row has
// moved on (another start) in the meantime.
func recordStopped(cfg Config, qemuPID int, why error) error {
	if cfg.Home == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	db, err := store.Open(ctx, store.Layout{Home: cfg.Home})
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.UpdateBox(ctx, cfg.BoxID, func(b *store.Box) error {
		if b.PID != qemuPID {
			return nil
		}
		b.Status, b.PID, b.StoppedAt = "stopped", 0, time.Now()
		b.Error = ""
		if why != nil {
			b.Error = why.Error()
		}
		return nil
	})
	return err
}

// firstAttempt bounds the first boot attempt: a guest that has not
// answered by then is treated as hung (seen, rarely, under software
// emulation) and booted once more. Normal boots take 2-10 s under TCG.
const firstAttempt = 45 * time.Second

// errHung marks a boot attempt that ran out of time with the VM still up.
var errHung = errors.New("guest agent did not answer")

// bootWithRetry boots; a first attempt that hangs is killed and retried
// once with the rest of the boot timeout. The hung attempt's console is
// kept as console.log.hung for diagnosis.
func bootWithRetry(cfg Config, log *slog.Logger) (*qemu.Machine, *client.Client, error) {
	deadline := time.Now().Add(cfg.BootTimeout)
	first := cfg.BootTimeout
	if first > firstAttempt+10*time.Second {
		first = firstAttempt
	}
	m, agent, err := boot(cfg, first)
	if err == nil || !errors.Is(err, errHung) || time.Until(deadline) < 10*time.Second {
		return m, agent, err
	}
	log.Warn("boot hung; retrying once", "after", first, "err", err)
	if cfg.Machine.ConsoleLog != "" {
		os.Rename(cfg.Machine.ConsoleLog, cfg.Machine.ConsoleLog+".hung")
	}
	return boot(cfg, time.Until(deadline))
}

// boot starts the VM and waits for its agent, killing the VM on failure.
func boot(cfg Config, timeout time.Duration) (*qemu.Machine, *client.Client, error) {
	m, err := qemu.New(cfg.Machine)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		return nil, nil, err
	}
	go func() {
		select {
		case <-m.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	agent, err := client.Dial(ctx, m.DialAgent)
	if err != nil {
		_ = m.Kill()
		if merr := m.Err(); merr != nil {
			return nil, nil, fmt.Errorf("guest did not come up: %w", merr)
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("%w within %s (see %s): %w", errHung, timeout, cfg.Machine.ConsoleLog, err)
		}
		return nil, nil, err
	}
	return m, agent, nil
}

// stop asks the guest to power off, then ends QEMU.
func stop(m *qemu.Machine, agent *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := agent.Shutdown(ctx)
	cancel()
	if err == nil {
		select {
		case <-m.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.Stop(ctx)
}

func writeExit(dir string, err error) {
	rec := exitRecord{Clean: err == nil}
	if err != nil {
		rec.Message = err.Error()
		rec.Panic = errors.Is(err, errdefs.ErrGuestPanic)
	}
	b, _ := json.Marshal(rec)
	tmp := filepath.Join(dir, ExitName+".tmp")
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, filepath.Join(dir, ExitName))
	}
}
