package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func TestMainStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "main.json")
	if _, ok := ReadMainState(path); ok {
		t.Fatal("state read from a missing file")
	}
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 5, time.UTC)
	for _, tc := range []struct {
		name  string
		state MainState
		ended bool
	}{
		{"running", MainState{StartedAt: t0, PID: 7}, false},
		{"exited", MainState{StartedAt: t0, PID: 7, FinishedAt: t0.Add(time.Second), ExitCode: 3}, true},
		{"killed with the box", MainState{StartedAt: t0, FinishedAt: t0.Add(time.Minute), ExitCode: 137, Signal: 9, Killed: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := WriteMainState(path, tc.state); err != nil {
				t.Fatal(err)
			}
			got, ok := ReadMainState(path)
			if !ok || !got.StartedAt.Equal(tc.state.StartedAt) || !got.FinishedAt.Equal(tc.state.FinishedAt) ||
				got.ExitCode != tc.state.ExitCode || got.Signal != tc.state.Signal || got.Killed != tc.state.Killed || got.PID != tc.state.PID {
				t.Fatalf("read %+v %v, want %+v", got, ok, tc.state)
			}
			if got.Ended() != tc.ended {
				t.Fatalf("Ended = %v, want %v", got.Ended(), tc.ended)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d files in the dir, want the state file only", len(entries))
	}
	os.WriteFile(path, []byte("{torn"), 0o600)
	if _, ok := ReadMainState(path); ok {
		t.Fatal("state read from a corrupt file")
	}
}

func TestStartErrorTypes(t *testing.T) {
	h := &Handle{dir: t.TempDir()}
	for _, tc := range []struct {
		msg  string
		want error
	}{
		{`main process "true": unknown user "nosuch": unknown user`, errdefs.ErrUnknownUser},
		{`main process "true": working directory "/x" not found: not found`, errdefs.ErrNotFound},
		{`guest kernel not found: missing dependency`, errdefs.ErrMissingDependency},
		{`cpus: invalid argument`, errdefs.ErrInvalidArgument},
		{`qemu: something broke`, nil},
	} {
		err := h.startError(tc.msg)
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%q: %v, want %v", tc.msg, err, tc.want)
		}
		if err.Error() != tc.msg {
			t.Errorf("message %q, want %q unchanged", err.Error(), tc.msg)
		}
	}
	if err := h.startError("boot failed"); errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("untyped message typed: %v", err)
	}
}
