package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

func TestCloneStoppedBox(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	src := startBox(t, rt, boxlite.BoxOptions{})
	run(t, src, sh("echo before > /root/a"))
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	clone, err := src.Clone(ctx, boxlite.CloneOptions{}, "the-clone")
	if err != nil {
		t.Fatal(err)
	}
	info := clone.Info()
	if info.ID == src.ID() || info.Name != "the-clone" || info.Status != boxlite.StatusStopped {
		t.Fatalf("clone info: %+v", info)
	}
	if _, err := src.Clone(ctx, boxlite.CloneOptions{}, "the-clone"); !errors.Is(err, boxlite.ErrAlreadyExists) {
		t.Fatalf("clone to a taken name: %v", err)
	}

	// Ten clones in a row, each timed.
	for i := range 10 {
		t0 := time.Now()
		c, err := src.Clone(ctx, boxlite.CloneOptions{}, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("clone %d: %s", i, time.Since(t0))
		if err := rt.Remove(ctx, c.ID(), false); err != nil {
			t.Fatal(err)
		}
	}

	// The ten clones pushed the source's chain past its bound: it was
	// flattened, and it still holds the data.
	if layers, _ := filepath.Glob(filepath.Join(rt.HomeDir(), "layers", "*.qcow2")); len(layers) > 9 {
		t.Fatalf("%d qcow2 layers after 11 clones: chains are not kept shallow", len(layers))
	}
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := clone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*boxlite.Box{src, clone} {
		if r := run(t, b, boxlite.Command{Name: "cat", Args: []string{"/root/a"}}); r.stdout != "before\n" {
			t.Fatalf("box %s: file written before the clone: %q", b.ID(), r.stdout)
		}
	}
	run(t, src, sh("echo src > /root/a; echo src > /root/src-only; sync"))
	run(t, clone, sh("echo clone > /root/a; echo clone > /root/clone-only; sync"))
	if r := run(t, src, sh("cat /root/a; ls /root")); r.stdout != "src\na\nsrc-only\n" {
		t.Fatalf("source sees %q", r.stdout)
	}
	if r := run(t, clone, sh("cat /root/a; ls /root")); r.stdout != "clone\na\nclone-only\n" {
		t.Fatalf("clone sees %q", r.stdout)
	}

	// Removing the source never breaks the clone.
	if err := rt.Remove(ctx, src.ID(), true); err != nil {
		t.Fatal(err)
	}
	if err := clone.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := clone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, clone, sh("cat /root/a /root/clone-only")); r.stdout != "clone\nclone\n" {
		t.Fatalf("clone after the source went: %q", r.stdout)
	}
	if err := rt.Remove(ctx, clone.ID(), true); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(rt.HomeDir(), "layers", "*")); len(left) != 0 {
		t.Fatalf("layers left after every box went: %v", left)
	}
	if _, err := os.Stat(filepath.Join(rt.HomeDir(), "boxes", clone.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("clone dir left")
	}
}

// TestCloneRunningBox: the source keeps running; writes before the clone
// are in both, writes after it stay on their side.
func TestCloneRunningBox(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	src := startBox(t, rt, boxlite.BoxOptions{})
	run(t, src, sh("echo before > /root/a"))
	bg, err := src.Exec(ctx, sh("i=0; while true; do echo $i >> /root/log; i=$((i+1)); sleep 0.01; done"))
	if err != nil {
		t.Fatal(err)
	}
	clone, err := src.Clone(ctx, boxlite.CloneOptions{}, "live-clone")
	if err != nil {
		t.Fatal(err)
	}
	if st := src.Info().Status; st != boxlite.StatusRunning {
		t.Fatalf("source is %s after a live clone", st)
	}
	run(t, src, sh("echo after > /root/a; sync"))
	if r := run(t, src, boxlite.Command{Name: "echo", Args: []string{"still"}}); r.stdout != "still\n" {
		t.Fatalf("source exec after the clone: %q", r.stdout)
	}
	bg.Kill(ctx)
	if err := clone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, clone, sh("cat /root/a; test -s /root/log && echo log-ok")); r.stdout != "before\nlog-ok\n" {
		t.Fatalf("clone sees %q, want the file as it was at the clone", r.stdout)
	}
	run(t, clone, sh("echo from-clone > /root/b; sync"))
	if r := run(t, src, sh("cat /root/a; test -e /root/b || echo no-b")); r.stdout != "after\nno-b\n" {
		t.Fatalf("source sees %q: writes leaked between source and clone", r.stdout)
	}
	// The source still restarts with its own data (its new overlay sits on
	// the frozen layer).
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, src, boxlite.Command{Name: "cat", Args: []string{"/root/a"}}); r.stdout != "after\n" {
		t.Fatalf("source after restart: %q", r.stdout)
	}
}
