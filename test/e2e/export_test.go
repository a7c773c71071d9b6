package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

func TestExportImportStopped(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath, CPUs: 2, Env: []string{"KEPT=yes"}}, "exp")
	if err != nil {
		t.Fatal(err)
	}
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	run(t, box, sh("echo stopped-export > /root/marker"))
	if err := box.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arch, err := box.Export(ctx, boxlite.ExportOptions{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(arch.Path, ".boxlite") {
		t.Fatalf("archive path %q", arch.Path)
	}
	if _, err := box.Export(ctx, boxlite.ExportOptions{}, dir); !errors.Is(err, boxlite.ErrAlreadyExists) {
		t.Fatalf("second export over the first: %v", err)
	}

	// Import into another home: a different machine, as far as the box knows.
	rt2 := newRuntime(t, boxlite.Options{})
	imp, err := rt2.Import(ctx, arch.Path, "imported")
	if err != nil {
		t.Fatal(err)
	}
	if info := imp.Info(); info.Status != boxlite.StatusStopped || info.Name != "imported" || info.CPUs != 2 {
		t.Fatalf("imported box: %+v", info)
	}
	if err := imp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, imp, sh("cat /root/marker; echo $KEPT")); r.stdout != "stopped-export\nyes\n" {
		t.Fatalf("imported box: %q", r.stdout)
	}
}

// TestExportRunningUnderWrites: a running box is exported while a loop
// writes random blocks; the source keeps running, and the import boots
// and has its files.
func TestExportRunningUnderWrites(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	src := startBox(t, rt, boxlite.BoxOptions{})
	run(t, src, sh("echo running-export > /root/marker; sync"))
	dd, err := src.Exec(ctx, sh("while true; do dd if=/dev/urandom of=/root/noise bs=4k count=64 seek=$((RANDOM % 256)) conv=notrunc 2>/dev/null; done"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	arch, err := src.Export(ctx, boxlite.ExportOptions{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if st := src.Info().Status; st != boxlite.StatusRunning {
		t.Fatalf("source is %s after export", st)
	}
	if r := run(t, src, boxlite.Command{Name: "echo", Args: []string{"alive"}}); r.stdout != "alive\n" {
		t.Fatalf("source exec after export: %q", r.stdout)
	}
	dd.Kill(ctx)

	imp, err := rt.Import(ctx, arch.Path, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := imp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := run(t, imp, sh("cat /root/marker; test -s /root/noise && echo noise-ok")); r.stdout != "running-export\nnoise-ok\n" {
		t.Fatalf("imported box: %q", r.stdout)
	}
}

func TestImportRefusesDamagedArchives(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath}, "src")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arch, err := box.Export(ctx, boxlite.ExportOptions{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(arch.Path)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0xff
	cases := map[string]string{
		"truncated":      write("truncated.boxlite", good[:len(good)/2]),
		"flipped":        write("flipped.boxlite", flipped),
		"not an archive": write("junk.boxlite", []byte("this is not an archive")),
		"empty":          write("empty.boxlite", nil),
	}
	// A valid archive whose disk reaches a host file through a backing file.
	evil := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", evil).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	cases["backing file"] = evilArchive(t, dir, evil)
	before, _ := rt.List(ctx)
	for name, p := range cases {
		if _, err := rt.Import(ctx, p, ""); !errors.Is(err, boxlite.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	after, _ := rt.List(ctx)
	if len(after) != len(before) {
		t.Fatalf("failed imports left boxes: %d -> %d", len(before), len(after))
	}
	entries, _ := os.ReadDir(filepath.Join(rt.HomeDir(), "boxes"))
	tmp, _ := os.ReadDir(filepath.Join(rt.HomeDir(), "tmp"))
	if len(entries) != 1 || len(tmp) != 0 {
		t.Fatalf("failed imports left files: %d box dirs, %d tmp entries", len(entries), len(tmp))
	}
	if _, err := rt.Import(ctx, "/no/such.boxlite", ""); !errors.Is(err, boxlite.ErrNotFound) {
		t.Errorf("missing archive: %v", err)
	}
}
