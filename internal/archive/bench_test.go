package archive

import (
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWrite archives a 70 MB file: 50 MB of random bytes, then 20 MB
// of zeros.
func BenchmarkWrite(b *testing.B) {
	path := filepath.Join(b.TempDir(), "disk")
	data := make([]byte, 70_000_000)
	rand.Read(data[:50_000_000])
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Write(b.Context(), io.Discard, testBox, "img", map[string]string{"disk.qcow2": path}); err != nil {
			b.Fatal(err)
		}
	}
}
