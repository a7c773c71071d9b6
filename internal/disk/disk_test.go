package disk

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, name := range []string{"mkfs.ext4", "qemu-img"} {
		if _, err := lookTool(name); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal(err)
			}
			t.Skip(err)
		}
	}
}

func TestBaseAndOverlay(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc", "hello"), []byte("hi\n"), 0o644)

	base := filepath.Join(dir, "base.ext4")
	if err := BaseFromDir(ctx, tree, base, 256<<20); err != nil {
		t.Fatal(err)
	}
	ok, err := IsExt4(base)
	if err != nil || !ok {
		t.Fatalf("IsExt4(base) = %v, %v", ok, err)
	}
	st, _ := os.Stat(base)
	if st.Size() != 256<<20 {
		t.Fatalf("base size %d, want %d", st.Size(), 256<<20)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".base.ext4.tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
	// The file is in the image: debugfs (e2fsprogs) reads it back.
	if out, err := exec.Command("debugfs", "-R", "cat /etc/hello", base).Output(); err == nil && string(out) != "hi\n" {
		t.Fatalf("debugfs cat: %q", out)
	}

	overlay := filepath.Join(dir, "disk.qcow2")
	if err := Overlay(ctx, base, "raw", overlay, 0); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", overlay).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"backing-filename": "`+base+`"`) || !strings.Contains(string(out), `"virtual-size": 268435456`) {
		t.Fatalf("overlay info: %s", out)
	}
}

func TestBaseFromDirErrors(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "x.ext4")
	if err := BaseFromDir(ctx, filepath.Join(dir, "missing"), out, 1<<30); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing dir: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if err := BaseFromDir(ctx, file, out, 1<<30); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("file as dir: %v", err)
	}
	if ok, err := IsExt4(file); ok || err != nil {
		t.Errorf("IsExt4(empty) = %v, %v", ok, err)
	}
	if err := Overlay(ctx, filepath.Join(dir, "nope"), "raw", filepath.Join(dir, "o.qcow2"), 0); err == nil {
		t.Error("overlay on a missing backing file succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "o.qcow2")); !errors.Is(err, os.ErrNotExist) {
		t.Error("failed overlay left a file")
	}
}

func TestMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := lookTool("no-such-tool-xyz")
	if !errors.Is(err, errdefs.ErrMissingDependency) {
		t.Fatalf("got %v", err)
	}
}

// TestFlatten: every layer between the top and the new backing survives.
func TestFlatten(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	os.WriteFile(base, make([]byte, 8<<20), 0o644)
	l1 := filepath.Join(dir, "l1.qcow2")
	l2 := filepath.Join(dir, "l2.qcow2")
	if err := Overlay(ctx, base, "raw", l1, 0); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, l1, "write -P 0xab 1M 64k")
	if err := Overlay(ctx, l1, "qcow2", l2, 0); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, l2, "write -P 0xcd 2M 64k")
	for _, backing := range []string{base, ""} {
		flat := filepath.Join(dir, "flat.qcow2")
		if err := Flatten(ctx, l2, flat, backing, "raw"); err != nil {
			t.Fatal(err)
		}
		qemuIO(t, flat, "read -P 0xab 1M 64k")
		qemuIO(t, flat, "read -P 0xcd 2M 64k")
		os.Remove(flat)
	}
}

func qemuIO(t *testing.T, img, cmd string) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-c", cmd, img).CombinedOutput()
	if err != nil || strings.Contains(string(out), "fail") {
		t.Fatalf("qemu-io %s %q: %v %s", img, cmd, err, out)
	}
}
