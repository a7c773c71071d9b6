package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// TestClassifyForgedPanic: a "Kernel panic" line on the console is a
// panic only when the guest did not power off cleanly; anyone in the
// guest who can write to the console can print that line.
func TestClassifyForgedPanic(t *testing.T) {
	console := filepath.Join(t.TempDir(), "console.log")
	line := "[   12.3] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\n"
	if err := os.WriteFile(console, []byte("boot\n"+line), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &Machine{params: Params{ConsoleLog: console}, output: newTailBuffer(1024)}
	if err := m.classify(nil, nil, "guest-shutdown", false, ""); err != nil {
		t.Errorf("power-off with a panic line on the console: %v, want clean", err)
	}
	if err := m.classify(nil, nil, "guest-reset", false, ""); !errors.Is(err, errdefs.ErrGuestPanic) {
		t.Errorf("reset with a panic line: %v, want ErrGuestPanic", err)
	}
	if err := m.classify(nil, nil, "guest-shutdown", true, "crashloaded"); !errors.Is(err, errdefs.ErrGuestPanic) {
		t.Errorf("GUEST_PANICKED then shutdown: %v, want ErrGuestPanic", err)
	}
}

// TestCapLog: a log its writer appends to is moved aside and restarted
// once past the cap, and appends keep landing at the new end.
func TestCapLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() { capLog(path, 1000, time.Millisecond, done); close(stopped) }()
	chunk := []byte(strings.Repeat("x", 99) + "\n")
	for range 50 {
		f.Write(chunk)
		time.Sleep(2 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		fi, err := os.Stat(path)
		if err == nil && fi.Size() <= 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log not capped: %v %v", fi.Size(), err)
		}
		time.Sleep(time.Millisecond)
	}
	close(done)
	<-stopped
	old, err := os.ReadFile(path + ".1")
	if err != nil || len(old) <= 1000 {
		t.Fatalf("older part: %d bytes, %v", len(old), err)
	}
	f.Write([]byte("after\n"))
	cur, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(cur), "after\n") || strings.Contains(string(cur), "\x00") {
		t.Fatalf("appends after the cap: %q", cur)
	}
}
