package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/boxlite-go/boxlite/internal/archive"
)

// evilArchive wraps disk in an otherwise valid archive.
func evilArchive(t *testing.T, dir, disk string) string {
	t.Helper()
	p := filepath.Join(dir, "evil.boxlite")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := archive.Write(context.Background(), f, []byte(`{"options":{}}`), "", map[string]string{"disk.qcow2": disk}); err != nil {
		t.Fatal(err)
	}
	return p
}
