package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

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
