package boxlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2"}, []string{"B=3", "C=4", "A=5"})
	want := []string{"A=5", "B=3", "C=4"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"box": true, "my-box_1.x": true, "A1": true,
		"": false, "-lead": false, "has space": false, "sl/ash": false, "x" + string(make([]byte, 70)): false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestBoxOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts BoxOptions
		want error
	}{
		{"defaults", BoxOptions{Rootfs: "/x"}, nil},
		{"no source", BoxOptions{}, ErrInvalidArgument},
		{"both sources", BoxOptions{Rootfs: "/x", Image: "alpine"}, ErrInvalidArgument},
		{"negative cpus", BoxOptions{Rootfs: "/x", CPUs: -1}, ErrInvalidArgument},
		{"absurd cpus", BoxOptions{Rootfs: "/x", CPUs: 1000}, ErrInvalidArgument},
		{"tiny memory", BoxOptions{Rootfs: "/x", MemoryMiB: 8}, ErrInvalidArgument},
		{"negative disk", BoxOptions{Rootfs: "/x", DiskSizeGB: -1}, ErrInvalidArgument},
		{"bad env", BoxOptions{Rootfs: "/x", Env: []string{"NOVALUE"}}, ErrInvalidArgument},
		{"relative workdir", BoxOptions{Rootfs: "/x", WorkingDir: "tmp"}, ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			err := o.validate()
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("validate: %v, want %v", err, tc.want)
			}
			if err == nil && (o.CPUs != DefaultCPUs || o.MemoryMiB != DefaultMemoryMiB || o.DiskSizeGB != DefaultDiskSizeGB) {
				t.Fatalf("defaults not applied: %+v", o)
			}
		})
	}
}

func TestNewRuntimeErrors(t *testing.T) {
	if _, err := NewRuntime(Options{HomeDir: t.TempDir(), Accel: "hvf"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad accel: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := NewRuntime(Options{HomeDir: file}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("home dir that is a file: %v", err)
	}
	if _, err := NewRuntime(Options{HomeDir: "/proc/boxlite-home"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unwritable home dir: %v", err)
	}
}

func TestGetAndRemoveUnknown(t *testing.T) {
	rt, err := NewRuntime(Options{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := rt.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get: %v", err)
	}
	if err := rt.Remove(ctx, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove: %v", err)
	}
	if err := rt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(ctx, BoxOptions{Rootfs: t.TempDir()}, ""); !errors.Is(err, ErrInvalidState) {
		t.Errorf("create after shutdown: %v", err)
	}
}

func TestRecoverRemovesOrphanDirs(t *testing.T) {
	home := t.TempDir()
	old := filepath.Join(home, "boxes", "deadbeef0001")
	young := filepath.Join(home, "boxes", "deadbeef0002")
	for _, d := range []string{old, young} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	os.Chtimes(old, past, past)
	rt, err := NewRuntime(Options{HomeDir: home})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Error("old box dir without a row survived recovery")
	}
	if _, err := os.Stat(young); err != nil {
		t.Error("young box dir (a create in progress elsewhere) was removed")
	}
}
