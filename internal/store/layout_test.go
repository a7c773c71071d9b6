package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func TestRunDir(t *testing.T) {
	// The long home's fallback goes under TMPDIR: this test's own, so that
	// nothing is left in the system's temp dir.
	t.Setenv("TMPDIR", t.TempDir())
	for _, tc := range []struct {
		name  string
		home  string
		under bool // inside home
	}{
		{"short home", t.TempDir(), true},
		{"long home", filepath.Join(t.TempDir(), strings.Repeat("d", 80)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Layout{Home: tc.home}
			dir, err := l.RunDir("0123456789ab")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if got := strings.HasPrefix(dir, tc.home); got != tc.under {
				t.Fatalf("RunDir = %q; inside home %v, want %v", dir, got, tc.under)
			}
			if n := len(filepath.Join(dir, "agent.sock")); n > 107 {
				t.Fatalf("socket path %d bytes", n)
			}
			if st, err := os.Stat(dir); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
				t.Fatalf("run dir: %v %v", st, err)
			}
		})
	}
}

// TestRunDirRefusesForeignParent: the temp-dir fallback's parent must be a
// private directory of ours; a planted symlink or an open directory is
// refused.
func TestRunDirRefusesForeignParent(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	l := Layout{Home: filepath.Join(t.TempDir(), strings.Repeat("h", 80))}
	dir, err := l.RunDir("0123456789ab")
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Dir(dir)
	if !strings.HasPrefix(parent, tmp) {
		t.Fatalf("fallback %q not under TMPDIR %q", dir, tmp)
	}

	if err := os.Chmod(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RunDir("0123456789ab"); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("open parent: %v, want ErrPermission", err)
	}

	if err := os.RemoveAll(parent); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, parent); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RunDir("0123456789ab"); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("symlinked parent: %v, want ErrPermission", err)
	}
}
