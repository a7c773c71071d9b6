package boxlite

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/store"
	"github.com/boxlite-go/boxlite/internal/supervisor"
)

// storedBox makes a box row and directory without a disk: enough for the
// methods that read the store and the box dir.
func storedBox(t *testing.T, rt *Runtime, opts BoxOptions) *Box {
	t.Helper()
	b := &Box{rt: rt, id: newID(), opts: opts, status: StatusConfigured, createdAt: time.Now()}
	rec, err := b.record()
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.db.CreateBox(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(rt.layout.BoxDir(b.id), 0o700); err != nil {
		t.Fatal(err)
	}
	box, err := rt.Get(t.Context(), b.id)
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func testRuntime(t *testing.T) *Runtime {
	t.Helper()
	rt, err := NewRuntime(Options{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Shutdown(context.Background()) })
	return rt
}

func TestCreateMainProcessNeedsCommand(t *testing.T) {
	rt := testRuntime(t)
	_, err := rt.Create(t.Context(), BoxOptions{Rootfs: t.TempDir(), MainProcess: true}, "nocmd")
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "no command") {
		t.Fatalf("create: %v, want ErrInvalidArgument naming the missing command", err)
	}
	if infos, err := rt.List(t.Context()); err != nil || len(infos) != 0 {
		t.Fatalf("boxes after a refused create: %v %v", infos, err)
	}
	if entries, _ := os.ReadDir(rt.layout.BoxesDir()); len(entries) != 0 {
		t.Fatalf("box dirs after a refused create: %d", len(entries))
	}
}

func TestMainProcessStateInInfoAndWait(t *testing.T) {
	rt := testRuntime(t)
	ctx := t.Context()
	idle := storedBox(t, rt, BoxOptions{Rootfs: "/r", Cmd: []string{"sh"}})
	if _, err := idle.Logs(ctx, LogOptions{}); !errors.Is(err, ErrInvalidState) {
		t.Errorf("logs of a box without a main process: %v, want ErrInvalidState", err)
	}
	if info := idle.Info(); info.MainCommand != nil {
		t.Errorf("MainCommand of a box without a main process: %q", info.MainCommand)
	}

	box := storedBox(t, rt, BoxOptions{Rootfs: "/r", Entrypoint: []string{"sh", "-c"}, Cmd: []string{"exit 3"}, MainProcess: true})
	info := box.Info()
	if want := []string{"sh", "-c", "exit 3"}; !slices.Equal(info.MainCommand, want) {
		t.Errorf("MainCommand = %q, want %q", info.MainCommand, want)
	}
	if info.ExitCode != 0 || !info.FinishedAt.IsZero() {
		t.Errorf("never run: exit %d finished %v", info.ExitCode, info.FinishedAt)
	}
	for _, follow := range []bool{false, true} {
		r, err := box.Logs(ctx, LogOptions{Follow: follow})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(r); err != nil || len(b) != 0 {
			t.Errorf("logs (follow %v) of a box never started: %q %v", follow, b, err)
		}
		r.Close()
	}
	if res, err := box.Wait(ctx); err != nil || res != (ExecResult{}) {
		t.Errorf("wait of a box never started: %+v %v", res, err)
	}

	// What a supervisor leaves after a run that exited 3.
	end := time.Now().UTC().Truncate(time.Millisecond)
	writeState(t, rt.layout.MainState(box.ID()), supervisor.MainState{StartedAt: end.Add(-time.Second), FinishedAt: end, ExitCode: 3})
	os.WriteFile(rt.layout.MainLog(box.ID()), []byte("hi\n"), 0o600)
	setStatus(t, rt, box.ID(), StatusStopped)
	if info := box.Info(); info.ExitCode != 3 || !info.FinishedAt.Equal(end) {
		t.Errorf("after a run: exit %d finished %v, want 3 at %v", info.ExitCode, info.FinishedAt, end)
	}
	if res, err := box.Wait(ctx); err != nil || res.ExitCode != 3 {
		t.Errorf("wait: %+v %v, want exit code 3", res, err)
	}
	r, err := box.Logs(ctx, LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := io.ReadAll(r); err != nil || string(b) != "hi\n" {
		t.Errorf("logs -f of a stopped box: %q %v", b, err)
	}
}

func TestWaitFollowsTheStore(t *testing.T) {
	rt := testRuntime(t)
	box := storedBox(t, rt, BoxOptions{Rootfs: "/r", Cmd: []string{"true"}, MainProcess: true})
	setStatus(t, rt, box.ID(), StatusRunning)
	box, _ = rt.Get(t.Context(), box.ID())
	done := make(chan ExecResult, 1)
	go func() {
		res, err := box.Wait(t.Context())
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	select {
	case res := <-done:
		t.Fatalf("wait returned while the box runs: %+v", res)
	case <-time.After(300 * time.Millisecond):
	}
	// Another process (the box's supervisor) records the end.
	writeState(t, rt.layout.MainState(box.ID()), supervisor.MainState{FinishedAt: time.Now(), ExitCode: 143, Signal: 15})
	setStatus(t, rt, box.ID(), StatusStopped)
	select {
	case res := <-done:
		if res.ExitCode != 143 || res.Signal != 15 {
			t.Fatalf("wait = %+v, want exit 143 by signal 15", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not see the box stop")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	setStatus(t, rt, box.ID(), StatusRunning)
	box, _ = rt.Get(t.Context(), box.ID())
	if _, err := box.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a canceled context: %v", err)
	}
}

func TestFollowReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "main.log")
	var running atomic.Bool
	running.Store(true)
	r := &followReader{ctx: t.Context(), path: path, running: func(context.Context) bool { return running.Load() }}
	defer r.Close()
	go func() {
		// The log appears late, grows, and the process then ends.
		time.Sleep(150 * time.Millisecond)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Error(err)
			return
		}
		for _, s := range []string{"one\n", "two\n", "three\n"} {
			f.WriteString(s)
			time.Sleep(120 * time.Millisecond)
		}
		f.WriteString("last\n")
		f.Close()
		running.Store(false)
	}()
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "one\ntwo\nthree\nlast\n" {
		t.Fatalf("followed %q %v", b, err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	r2 := &followReader{ctx: ctx, path: path, running: func(context.Context) bool { return true }}
	defer r2.Close()
	b, err = io.ReadAll(r2)
	if !errors.Is(err, context.DeadlineExceeded) || string(b) != "one\ntwo\nthree\nlast\n" {
		t.Fatalf("follow until ctx ends: %q %v", b, err)
	}
}

func writeState(t *testing.T, path string, s supervisor.MainState) {
	t.Helper()
	if err := supervisor.WriteMainState(path, s); err != nil {
		t.Fatal(err)
	}
}

func setStatus(t *testing.T, rt *Runtime, id string, st Status) {
	t.Helper()
	_, err := rt.db.UpdateBox(t.Context(), id, func(r *store.Box) error {
		r.Status = string(st)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
