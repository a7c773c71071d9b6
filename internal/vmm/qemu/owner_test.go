package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/vmm"
)

// TestQEMUDiesWithOwner starts a machine in a child process (this test
// binary, running TestOwnerHelper), kills the child with SIGKILL and
// checks that QEMU dies with it.
func TestQEMUDiesWithOwner(t *testing.T) {
	a := requireBoot(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOwnerHelper$", "-test.v")
	cmd.Env = append(os.Environ(),
		"BOXLITE_TEST_OWNER_DIR="+dir,
		"BOXLITE_TEST_OWNER_KERNEL="+a.vmlinux,
		"BOXLITE_TEST_OWNER_INITRD="+a.initrd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "qemu-pid "); ok {
			pid, _ = strconv.Atoi(s)
			break
		}
	}
	if pid == 0 {
		cmd.Wait()
		t.Fatalf("helper did not report a qemu pid")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if alive(pid) != nil {
		t.Fatalf("qemu %d not running before its owner died", pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("qemu %d outlived its owner", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	assertNoQEMU(t, dir)
}

// alive returns nil if pid is a live (not zombie) process.
func alive(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err
	}
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i:]), ") Z") {
		return fmt.Errorf("zombie")
	}
	return nil
}

// TestOwnerHelper is TestQEMUDiesWithOwner's child.
func TestOwnerHelper(t *testing.T) {
	dir := os.Getenv("BOXLITE_TEST_OWNER_DIR")
	if dir == "" {
		t.Skip("helper of TestQEMUDiesWithOwner")
	}
	m, err := New(vmm.Config{
		Name:    "owner-helper",
		Dir:     dir, // the parent's: this process is killed, so it makes no temporary files
		Kernel:  os.Getenv("BOXLITE_TEST_OWNER_KERNEL"),
		Initrd:  os.Getenv("BOXLITE_TEST_OWNER_INITRD"),
		Cmdline: "BOXLITE_TEST_MODE=sleep",
		Accel:   testAccel(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("qemu-pid %d\n", m.PID())
	time.Sleep(time.Minute)
	m.Kill()
}

// TestQEMUSurvivesStarterThread checks that QEMU does not get its
// Pdeathsig when the OS thread of the goroutine that called Start exits:
// Pdeathsig follows the thread that forked, and Start forks from a thread
// of its own.
func TestQEMUSurvivesStarterThread(t *testing.T) {
	a := requireBoot(t)
	cfg := bootConfig(t, a.vmlinux, a.initrd, "sleep")
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		errc <- m.Start(t.Context())
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Kill()
		assertNoQEMU(t, cfg.Dir)
	})
	select {
	case <-m.Done():
		t.Fatalf("qemu died with the starter's thread: %v", m.Err())
	case <-time.After(500 * time.Millisecond):
	}
}
