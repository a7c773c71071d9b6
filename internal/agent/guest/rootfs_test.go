package guest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// makeTree creates files ("f"), dirs ("d"), executables ("x") and symlinks
// ("l:target") under root.
func makeTree(t *testing.T, root string, tree map[string]string) {
	t.Helper()
	for p, kind := range tree {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case kind == "d":
			err = os.MkdirAll(full, 0o755)
		case kind == "f":
			err = os.WriteFile(full, []byte("data"), 0o644)
		case kind == "x":
			err = os.WriteFile(full, []byte("#!/bin/sh\n"), 0o755)
		case len(kind) > 2 && kind[:2] == "l:":
			err = os.Symlink(kind[2:], full)
		default:
			t.Fatalf("bad kind %q", kind)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	makeTree(t, root, map[string]string{
		"bin/busybox":        "x",
		"bin/sh":             "l:/bin/busybox",
		"usr/bin/rel":        "l:../../bin/busybox",
		"escape":             "l:../../../../etc",
		"loop1":              "l:/loop2",
		"loop2":              "l:loop1",
		"etc/passwd":         "f",
		"lib":                "l:usr/lib",
		"usr/lib/x/data":     "f",
		"home/alice/.keep":   "f",
		"file/not-dir-child": "d",
	})
	tests := []struct {
		path    string
		want    string // relative to root; "" when an error is expected
		wantErr error
	}{
		{"/bin/sh", "bin/busybox", nil},
		{"/usr/bin/rel", "bin/busybox", nil},
		{"/escape", "etc", nil}, // ".." stops at the root
		{"/escape/passwd", "etc/passwd", nil},
		{"/lib/x/data", "usr/lib/x/data", nil},
		{"/../../home/./alice", "home/alice", nil},
		{"/", ".", nil},
		{"/missing", "", fs.ErrNotExist},
		{"/etc/passwd/x", "", fs.ErrNotExist},
		{"/loop1", "", syscall.ELOOP},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := resolveInRoot(root, tt.path)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(root, tt.want); got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
		})
	}
}
