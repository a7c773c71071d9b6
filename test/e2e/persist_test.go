package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

// TestPersistAcrossRuntimes: a box made by one Runtime is found, started
// and has its files in a later Runtime on the same home dir.
func TestPersistAcrossRuntimes(t *testing.T) {
	requireVM(t)
	home := newHome(t)
	ctx := context.Background()
	rt1, err := boxlite.NewRuntime(boxlite.Options{HomeDir: home, AgentPath: agentPath})
	if err != nil {
		t.Fatal(err)
	}
	box, err := rt1.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath, CPUs: 2, Labels: map[string]string{"k": "v"}}, "keep")
	if err != nil {
		t.Fatal(err)
	}
	id := box.ID()
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	run(t, box, sh("echo persisted > /root/file"))
	if err := rt1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	rt2 := newRuntime(t, boxlite.Options{HomeDir: home})
	infos, err := rt2.List(ctx)
	if err != nil || len(infos) != 1 || infos[0].ID != id || infos[0].Name != "keep" || infos[0].Status != boxlite.StatusStopped || infos[0].CPUs != 2 {
		t.Fatalf("list in a new runtime: %+v %v", infos, err)
	}
	again, err := rt2.Get(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, again, boxlite.Command{Name: "cat", Args: []string{"/root/file"}}); r.stdout != "persisted\n" {
		t.Fatalf("file after restart in a new runtime: %q", r.stdout)
	}
	if err := rt2.Remove(ctx, "keep", false); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Fatalf("remove running without force: %v", err)
	}
	if err := rt2.Remove(ctx, "keep", true); err != nil {
		t.Fatal(err)
	}
	if _, err := rt2.Get(ctx, id); !errors.Is(err, boxlite.ErrNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
	if _, err := os.Stat(home + "/boxes/" + id); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("box dir left after remove")
	}
}

// victimEnv makes the test binary act as a host program that starts a
// box and then hangs until killed.
const victimEnv = "BOXLITE_E2E_VICTIM_HOME"

func runVictim(home string) {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	rt, err := boxlite.NewRuntime(boxlite.Options{HomeDir: home, AgentPath: agentPath})
	if err != nil {
		fail(err)
	}
	detach := os.Getenv("BOXLITE_E2E_DETACH") == "1"
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath, Detach: detach}, "victim")
	if err != nil {
		fail(err)
	}
	if err := box.Start(ctx); err != nil {
		fail(err)
	}
	ex, err := box.Exec(ctx, sh("echo survived > /root/f; sync"))
	if err != nil {
		fail(err)
	}
	if _, err := ex.Wait(ctx); err != nil {
		fail(err)
	}
	fmt.Printf("ready %d\n", box.Info().PID)
	if detach {
		if err := rt.Shutdown(ctx); err != nil {
			fail(err)
		}
		os.Exit(0)
	}
	time.Sleep(time.Hour)
}

// startVictim runs the victim in a child process and returns it with the
// QEMU pid it reported.
func startVictim(t *testing.T, home string, detach bool) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), victimEnv+"="+home, "BOXLITE_AGENT="+agentPath, "BOXLITE_TEST_ROOTFS="+rootfsPath)
	if detach {
		cmd.Env = append(cmd.Env, "BOXLITE_E2E_DETACH=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("victim: %q %v", line, err)
	}
	var qemuPID int
	fmt.Sscanf(line, "ready %d", &qemuPID)
	return cmd, qemuPID
}

// TestDetachAndReattach: a detached box outlives the program that started
// it; another runtime runs commands in it and stops it.
func TestDetachAndReattach(t *testing.T) {
	requireVM(t)
	home := newHome(t)
	cmd, qemuPID := startVictim(t, home, true)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("victim exit: %v", err)
	}
	if !qemuAliveByPID(qemuPID) {
		t.Fatal("detached box died with the program that started it")
	}
	rt := newRuntime(t, boxlite.Options{HomeDir: home})
	ctx := context.Background()
	box, err := rt.Get(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	if info := box.Info(); info.Status != boxlite.StatusRunning || info.PID != qemuPID {
		t.Fatalf("detached box seen from another process: %+v", info)
	}
	if r := run(t, box, boxlite.Command{Name: "cat", Args: []string{"/root/f"}}); r.stdout != "survived\n" {
		t.Fatalf("exec in the re-attached box: %q", r.stdout)
	}
	if err := box.Start(ctx); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Fatalf("start of a running box: %v", err)
	}
	if err := box.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if info := box.Info(); info.Status != boxlite.StatusStopped || info.Error != "" {
		t.Fatalf("after stop: %+v", info)
	}
	waitQEMUGone(t, qemuPID, "the box was stopped")
	// A third runtime agrees.
	rt3 := newRuntime(t, boxlite.Options{HomeDir: home})
	b3, err := rt3.Get(ctx, "victim")
	if err != nil || b3.Info().Status != boxlite.StatusStopped {
		t.Fatalf("third runtime: %v %+v", err, b3.Info())
	}
}

// TestRecoveryAfterHostKilled: kill -9 of the program that runs a box
// takes its VM along; a new Runtime finds the box stopped, with the
// reason, and starts it with its files.
func TestRecoveryAfterHostKilled(t *testing.T) {
	requireVM(t)
	home := newHome(t)
	cmd, qemuPID := startVictim(t, home, false)
	cmd.Process.Kill()
	cmd.Wait()
	waitQEMUGone(t, qemuPID, "its owner was killed")

	rt := newRuntime(t, boxlite.Options{HomeDir: home})
	box, err := rt.Get(context.Background(), "victim")
	if err != nil {
		t.Fatal(err)
	}
	info := box.Info()
	if info.Status != boxlite.StatusStopped || !strings.Contains(info.Error, "exited") {
		t.Fatalf("recovered box: %+v", info)
	}
	if err := box.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, boxlite.Command{Name: "cat", Args: []string{"/root/f"}}); r.stdout != "survived\n" {
		t.Fatalf("file after recovery: %q", r.stdout)
	}
}

// qemuAliveByPID: the process exists and is not a zombie.
func qemuAliveByPID(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && len(b) > 0
}

// TestConcurrentStartsOfOneBox: two runtimes on one home dir start the
// same box at once; exactly one boots it.
func TestConcurrentStartsOfOneBox(t *testing.T) {
	requireVM(t)
	home := newHome(t)
	ctx := context.Background()
	rt1 := newRuntime(t, boxlite.Options{HomeDir: home})
	rt2 := newRuntime(t, boxlite.Options{HomeDir: home})
	b1, err := rt1.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "contended")
	if err != nil {
		t.Fatal(err)
	}
	b2, err := rt2.Get(ctx, "contended")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, b := range []*boxlite.Box{b1, b2} {
		go func() { errs <- b.Start(ctx) }()
	}
	var ok, refused int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, boxlite.ErrInvalidState):
			refused++
		default:
			t.Errorf("start: %v", err)
		}
	}
	if ok != 1 || refused != 1 {
		t.Fatalf("%d starts succeeded, %d refused; want 1 and 1", ok, refused)
	}
	for _, rt := range []*boxlite.Runtime{rt1, rt2} {
		b, err := rt.Get(ctx, "contended")
		if err != nil {
			t.Fatal(err)
		}
		if r := run(t, b, boxlite.Command{Name: "echo", Args: []string{"one"}}); r.stdout != "one\n" {
			t.Fatalf("exec: %q", r.stdout)
		}
	}
}

// waitQEMUGone fails the test if QEMU process pid still runs 10 s after
// what happened.
func waitQEMUGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for qemuAliveByPID(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU %d still runs 10 s after %s", pid, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
