package e2e

import (
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

// readLogs returns the box's main process output (following it to its end
// when follow is set).
func readLogs(t *testing.T, box *boxlite.Box, follow bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := box.Logs(ctx, boxlite.LogOptions{Follow: follow})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("logs: %v (read %q)", err, b)
	}
	return string(b)
}

func waitBox(t *testing.T, box *boxlite.Box) boxlite.ExecResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := box.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestMainProcess: a detached box's main process runs on after the runtime
// that started it has shut down; its supervisor logs its output, records
// its exit code and stops the box; a new Start runs it again.
func TestMainProcess(t *testing.T) {
	requireVM(t)
	home := newHome(t)
	ctx := context.Background()
	rt1, err := boxlite.NewRuntime(boxlite.Options{HomeDir: home, AgentPath: agentPath})
	if err != nil {
		t.Fatal(err)
	}
	box, err := rt1.Create(ctx, boxlite.BoxOptions{
		Rootfs:      rootfsPath,
		Env:         []string{"WHO=main"},
		Cmd:         []string{"sh", "-c", "echo hi $WHO; echo oops >&2; sleep 2; exit 3"},
		MainProcess: true,
		Detach:      true,
	}, "job")
	if err != nil {
		t.Fatal(err)
	}
	id := box.ID()
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if info := box.Info(); info.Status != boxlite.StatusRunning || !info.FinishedAt.IsZero() ||
		strings.Join(info.MainCommand, " ") != "sh -c echo hi $WHO; echo oops >&2; sleep 2; exit 3" {
		t.Fatalf("main process running: %+v", info)
	}
	if err := rt1.Shutdown(ctx); err != nil { // lets go of the detached box
		t.Fatal(err)
	}

	rt2 := newRuntime(t, boxlite.Options{HomeDir: home})
	box, err = rt2.Get(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	if out := readLogs(t, box, true); !strings.Contains(out, "hi main\n") || !strings.Contains(out, "oops\n") {
		t.Fatalf("followed logs: %q", out)
	}
	if res := waitBox(t, box); res.ExitCode != 3 {
		t.Fatalf("wait: %+v, want exit code 3", res)
	}
	info := box.Info()
	if info.Status != boxlite.StatusStopped || info.ExitCode != 3 || info.Error != "" || !info.FinishedAt.After(info.StartedAt) {
		t.Fatalf("after the main process: %+v", info)
	}
	if qemuRunning(id) {
		t.Fatal("QEMU still runs after the main process ended")
	}

	// Start runs it again; the log appends.
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if res := waitBox(t, box); res.ExitCode != 3 {
		t.Fatalf("second run: %+v, want exit code 3", res)
	}
	if out := readLogs(t, box, false); strings.Count(out, "hi main\n") != 2 {
		t.Fatalf("logs after two runs: %q", out)
	}
	if info := box.Info(); info.Status != boxlite.StatusStopped || info.ExitCode != 3 || info.Error != "" {
		t.Fatalf("after the second run: %+v", info)
	}
}

// TestMainProcessStop: Stop gives the main process SIGTERM and time to
// end on its own; one that ignores SIGTERM goes down with the box (137).
// Either way how it ended is recorded.
func TestMainProcessStop(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	for _, tc := range []struct {
		name     string
		trap     string
		wantCode int
		wantLog  string
	}{
		{"ends on SIGTERM", `trap "echo bye; exit 0" TERM`, 0, "\nbye\n"},
		{"ignores SIGTERM", `trap "" TERM`, 137, "up\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			box := startBox(t, rt, boxlite.BoxOptions{
				Cmd:         []string{"sh", "-c", tc.trap + `; echo up; touch /tmp/up; while true; do sleep 0.2; done`},
				MainProcess: true,
			})
			run(t, box, sh("while [ ! -e /tmp/up ]; do sleep 0.1; done"))
			if info := box.Info(); info.Status != boxlite.StatusRunning || !info.FinishedAt.IsZero() {
				t.Fatalf("running: %+v", info)
			}
			began := time.Now()
			if err := box.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			took := time.Since(began)
			info := box.Info()
			if info.Status != boxlite.StatusStopped || info.ExitCode != tc.wantCode || info.FinishedAt.IsZero() || info.Error != "" {
				t.Fatalf("after stop (%s): %+v", took, info)
			}
			// (sh's "Terminated" for its sleep goes to stderr, in any
			// order with stdout.)
			if out := readLogs(t, box, false); !strings.Contains(out, tc.wantLog) {
				t.Fatalf("logs: %q, want %q in them", out, tc.wantLog)
			}
			t.Logf("stop took %s", took)
		})
	}
}

// TestMainProcessBadInput: a main process without a command is refused at
// Create; one that cannot start fails Start with a typed error and leaves
// no VM running.
func TestMainProcessBadInput(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath, MainProcess: true}, ""); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Fatalf("main process without a command: %v", err)
	}
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath, MainProcess: true, User: "nosuch", Cmd: []string{"true"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := box.Start(ctx); !errors.Is(err, boxlite.ErrUnknownUser) {
		t.Fatalf("start with an unknown user: %v, want ErrUnknownUser", err)
	}
	if info := box.Info(); info.Status != boxlite.StatusConfigured || !strings.Contains(info.Error, "unknown user") {
		t.Fatalf("after the failed start: %+v", info)
	}
	if qemuRunning(box.ID()) {
		t.Fatal("QEMU left running by a failed start")
	}
	idle := startBox(t, rt, boxlite.BoxOptions{})
	if _, err := idle.Logs(ctx, boxlite.LogOptions{}); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Fatalf("logs of a box without a main process: %v", err)
	}
}

// TestCLIImageMainProcess: run -d IMAGE runs the image's default command
// as the main process, as docker run -d does; COMMAND replaces it.
func TestCLIImageMainProcess(t *testing.T) {
	bin := buildCLI(t)
	host, stop := serveImage(t, "test/busybox:v1")
	defer stop()
	home := newHome(t)
	defer removeAllBoxes(bin, home)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"--home", home, "--insecure-registry", host}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("boxlite %q: %v: %s", args, err, out)
		}
		return string(out)
	}
	cli("run", "-d", "--name", "dflt", "test/busybox:v1")
	if out := cli("wait", "dflt"); out != "0\n" {
		t.Fatalf("wait for the image's command: %q", out)
	}
	if out := cli("logs", "dflt"); out != "default-cmd from-image /home/user\n" {
		t.Fatalf("logs of the image's command: %q", out)
	}
	cli("run", "-d", "--name", "own", "-e", "IMG_VAR=x", "test/busybox:v1", "sh", "-c", "echo $IMG_VAR $(pwd); exit 4")
	if out := cli("wait", "own"); out != "4\n" {
		t.Fatalf("wait for COMMAND: %q", out)
	}
	if out := cli("logs", "own"); out != "x /home/user\n" {
		t.Fatalf("logs of COMMAND: %q", out)
	}
}
