package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

func waitStatus(t *testing.T, box *boxlite.Box, want boxlite.Status) boxlite.BoxInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info := box.Info()
		if info.Status == want {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("box status %s, want %s", info.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGuestPanicIsReported(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	box := startBox(t, rt, boxlite.BoxOptions{})
	id := box.Info().ID
	ctx := context.Background()
	ex, err := box.Exec(ctx, boxlite.Command{Name: "sleep", Args: []string{"100"}})
	if err != nil {
		t.Fatal(err)
	}
	// Crash the guest kernel.
	crash, err := box.Exec(ctx, sh("echo c > /proc/sysrq-trigger"))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err = ex.Wait(wctx)
	if !errors.Is(err, boxlite.ErrBoxDown) || !errors.Is(err, boxlite.ErrGuestPanic) {
		t.Fatalf("wait on a running exec: %v, want ErrBoxDown and ErrGuestPanic", err)
	}
	crash.Wait(wctx)
	info := waitStatus(t, box, boxlite.StatusStopped)
	if !strings.Contains(info.Error, "panic") {
		t.Fatalf("info error %q does not tell of the panic", info.Error)
	}
	if _, err := box.Exec(ctx, boxlite.Command{Name: "true"}); !errors.Is(err, boxlite.ErrGuestPanic) {
		t.Fatalf("exec after panic: %v, want ErrGuestPanic", err)
	}
	if qemuRunning(id) {
		t.Fatal("QEMU still runs after the guest panicked")
	}
	// The box can be started again.
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, boxlite.Command{Name: "echo", Args: []string{"back"}}); r.stdout != "back\n" {
		t.Fatalf("after restart: %q", r.stdout)
	}
}

// TestForgedPanicLine: a process in the box prints a kernel panic line on
// the console, then powers the guest off. That is a power-off, not a
// panic.
func TestForgedPanicLine(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	box := startBox(t, rt, boxlite.BoxOptions{})
	ctx := context.Background()
	ex, err := box.Exec(ctx, sh("echo 'Kernel panic - not syncing: forged' > /dev/console; sync; poweroff -f"))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ex.Wait(wctx)
	info := waitStatus(t, box, boxlite.StatusStopped)
	if strings.Contains(info.Error, "panic") || !strings.Contains(info.Error, "powered off") {
		t.Fatalf("info error %q: want a power-off, not a panic", info.Error)
	}
	if b, _ := os.ReadFile(box.ConsoleLogPath()); !strings.Contains(string(b), "forged") {
		t.Fatalf("the forged line did not reach the console; the test proves nothing")
	}
}

func TestKilledQEMUIsReported(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	box := startBox(t, rt, boxlite.BoxOptions{})
	ctx := context.Background()
	ex, err := box.Exec(ctx, boxlite.Command{Name: "sleep", Args: []string{"100"}})
	if err != nil {
		t.Fatal(err)
	}
	pid := box.Info().PID
	if pid == 0 {
		t.Fatal("running box reports no pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err = ex.Wait(wctx)
	if !errors.Is(err, boxlite.ErrBoxDown) || errors.Is(err, boxlite.ErrGuestPanic) {
		t.Fatalf("wait: %v, want ErrBoxDown (not a panic)", err)
	}
	if !strings.Contains(err.Error(), "signal") && !strings.Contains(err.Error(), "killed") {
		t.Fatalf("error %q does not say QEMU was killed", err)
	}
	info := waitStatus(t, box, boxlite.StatusStopped)
	if info.Error == "" {
		t.Fatal("box info keeps no reason")
	}
	if _, err := box.Exec(ctx, boxlite.Command{Name: "true"}); !errors.Is(err, boxlite.ErrBoxDown) {
		t.Fatalf("exec after kill: %v, want ErrBoxDown", err)
	}
}

// TestBootLoop boots 30 times in a row: under emulation on microvm
// (no PIT, no HPET) the kernel hangs calibrating its clock unless it gets
// tsc_early_khz.
func TestBootLoop(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "loop")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		bctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		if err := box.Start(bctx); err != nil {
			cancel()
			t.Fatalf("boot %d: %v", i, err)
		}
		cancel()
		r := run(t, box, boxlite.Command{Name: "echo", Args: []string{"up"}})
		if r.stdout != "up\n" {
			t.Fatalf("boot %d: echo printed %q", i, r.stdout)
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := box.Stop(sctx); err != nil {
			cancel()
			t.Fatalf("stop %d: %v", i, err)
		}
		cancel()
		if info := box.Info(); info.Status != boxlite.StatusStopped || info.Error != "" {
			t.Fatalf("after stop %d: %+v", i, info)
		}
	}
}

func TestFilesPersistAcrossStop(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	box := startBox(t, rt, boxlite.BoxOptions{})
	ctx := context.Background()
	run(t, box, sh("echo kept > /root/marker"))
	if err := box.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, boxlite.Command{Name: "cat", Args: []string{"/root/marker"}}); r.stdout != "kept\n" {
		t.Fatalf("after restart: %q", r.stdout)
	}
}

func TestBadInput(t *testing.T) {
	requireVM(t)
	ctx := context.Background()
	rt := newRuntime(t, boxlite.Options{})

	if _, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: "/no/such/rootfs"}, ""); !errors.Is(err, boxlite.ErrNotFound) {
		t.Errorf("missing rootfs: %v, want ErrNotFound", err)
	}
	notExt4 := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(notExt4, []byte("not a filesystem"), 0o644)
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: notExt4}, ""); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Errorf("junk rootfs: %v, want ErrInvalidArgument", err)
	}
	for _, o := range []boxlite.BoxOptions{
		{Rootfs: rootfsPath, CPUs: -1},
		{Rootfs: rootfsPath, MemoryMiB: 1},
		{Rootfs: rootfsPath, DiskSizeGB: -3},
		{},
	} {
		if _, err := rt.Create(ctx, o, ""); !errors.Is(err, boxlite.ErrInvalidArgument) {
			t.Errorf("options %+v: %v, want ErrInvalidArgument", o, err)
		}
	}
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "bad/name"); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Errorf("bad name: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(rt.HomeDir(), "boxes"))
	if len(entries) != 0 {
		t.Errorf("failed creates left %d box dirs", len(entries))
	}

	// Missing kernel: named, with the install command.
	rtk := newRuntime(t, boxlite.Options{Kernel: "/no/such/vmlinuz"})
	box, err := rtk.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "")
	if err != nil {
		t.Fatal(err)
	}
	err = box.Start(ctx)
	if !errors.Is(err, boxlite.ErrMissingDependency) || !strings.Contains(err.Error(), "/no/such/vmlinuz") {
		t.Errorf("missing kernel: %v", err)
	}
	if box.Info().Status != boxlite.StatusConfigured {
		t.Errorf("failed start left status %s", box.Info().Status)
	}

	// Missing QEMU: PATH without it.
	rtq := newRuntime(t, boxlite.Options{})
	box, err = rtq.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	err = box.Start(ctx)
	if !errors.Is(err, boxlite.ErrMissingDependency) || !strings.Contains(err.Error(), "apt-get install qemu-system-x86") {
		t.Errorf("missing qemu: %v", err)
	}

	// Missing agent.
	rta := newRuntime(t, boxlite.Options{AgentPath: "/no/such/agent"})
	box, err = rta.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "")
	if err == nil {
		err = box.Start(ctx)
	}
	if !errors.Is(err, boxlite.ErrMissingDependency) {
		t.Errorf("missing agent: %v", err)
	}
}

// TestFailedBootLeavesNoQEMU: a start abandoned before the agent answers
// kills the VM.
func TestFailedBootLeavesNoQEMU(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := box.Start(sctx); err == nil {
		t.Fatal("start within 300ms succeeded under emulation; cannot test a failed boot")
	}
	if qemuRunning(box.ID()) {
		t.Fatal("QEMU left running after a failed start")
	}
	if st := box.Info().Status; st != boxlite.StatusConfigured {
		t.Fatalf("status %s after failed start", st)
	}
	// And it starts fine afterwards.
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, boxlite.Command{Name: "echo", Args: []string{"ok"}}); r.stdout != "ok\n" {
		t.Fatalf("echo: %q", r.stdout)
	}
}

func TestStateChecks(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "states")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := box.Exec(ctx, boxlite.Command{Name: "true"}); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Errorf("exec on configured box: %v", err)
	}
	if err := box.Stop(ctx); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Errorf("stop of configured box: %v", err)
	}
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "states"); !errors.Is(err, boxlite.ErrAlreadyExists) {
		t.Errorf("duplicate name: %v", err)
	}
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := box.Start(ctx); !errors.Is(err, boxlite.ErrInvalidState) || !strings.Contains(err.Error(), "running") {
		t.Errorf("second start: %v", err)
	}
	if err := rt.Remove(ctx, "states", false); !errors.Is(err, boxlite.ErrInvalidState) {
		t.Errorf("remove running without force: %v", err)
	}
	got, err := rt.Get(ctx, box.ID()[:4])
	if err != nil || got != box {
		t.Errorf("get by prefix: %v", err)
	}
	qemuPID := box.Info().PID
	if err := rt.Remove(ctx, "states", true); err != nil {
		t.Fatal(err)
	}
	if qemuRunning(box.ID()) {
		t.Error("forced remove left QEMU running")
	}
	// Not even a zombie: the supervisor reaps QEMU before it goes (an
	// orphaned zombie would wait for PID 1, which on some hosts takes
	// seconds).
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", qemuPID)); !errors.Is(err, os.ErrNotExist) {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", qemuPID))
		t.Errorf("forced remove left QEMU (pid %d) unreaped: %v %s", qemuPID, err, st)
	}
	if _, err := rt.Get(ctx, "states"); !errors.Is(err, boxlite.ErrNotFound) {
		t.Errorf("get removed: %v", err)
	}
}

// TestExt4Rootfs: an ext4 image as the rootfs is used read-only under the
// box's own overlay.
func TestExt4Rootfs(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	img := filepath.Join(t.TempDir(), "root.ext4")
	if out, err := exec.Command("truncate", "-s", "256M", img).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v %s", err, out)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", rootfsPath, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	before := fileHash(t, img)
	box := startBox(t, rt, boxlite.BoxOptions{Rootfs: img})
	r := run(t, box, sh("echo written > /root/new; cat /etc/issue; cat /root/new"))
	if r.stdout != "boxlite busybox\nwritten\n" {
		t.Fatalf("got %q", r.stdout)
	}
	if err := box.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, img) != before {
		t.Fatal("the box wrote to its ext4 rootfs image")
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// TestKilledSupervisorIsReported: kill -9 of a box's supervisor takes its
// VM along and the box reports why.
func TestKilledSupervisorIsReported(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	box := startBox(t, rt, boxlite.BoxOptions{})
	ctx := context.Background()
	ex, err := box.Exec(ctx, boxlite.Command{Name: "sleep", Args: []string{"100"}})
	if err != nil {
		t.Fatal(err)
	}
	qemuPID := box.Info().PID
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", qemuPID))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	var supervisor int
	fmt.Sscan(fields[1], &supervisor)
	if supervisor <= 1 || supervisor == os.Getpid() {
		t.Fatalf("QEMU's parent %d is not a supervisor", supervisor)
	}
	if err := syscall.Kill(supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := ex.Wait(wctx); !errors.Is(err, boxlite.ErrBoxDown) {
		t.Fatalf("wait: %v, want ErrBoxDown", err)
	}
	info := waitStatus(t, box, boxlite.StatusStopped)
	if !strings.Contains(info.Error, "supervisor") {
		t.Fatalf("reason %q does not name the supervisor", info.Error)
	}
	waitQEMUGone(t, qemuPID, "its supervisor was killed")
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, boxlite.Command{Name: "true"}); r.res.ExitCode != 0 {
		t.Fatal("box does not work after restart")
	}
}

// TestAutoRemove: a box with AutoRemove is gone once it stops.
func TestAutoRemove(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	box := startBox(t, rt, boxlite.BoxOptions{AutoRemove: true})
	ctx := context.Background()
	if err := box.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Get(ctx, box.ID()); !errors.Is(err, boxlite.ErrNotFound) {
		t.Fatalf("get after stop: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(rt.HomeDir(), "boxes", box.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("box dir left after auto-remove")
	}
}
