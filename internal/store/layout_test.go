package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunDir(t *testing.T) {
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
