package kernel

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestPrepare(t *testing.T) {
	elf := makeELF(elfOptions{})
	tests := []struct {
		name    string
		image   []byte
		cancel  bool
		wantErr string
	}{
		{name: "lz4 bzImage", image: makeBzImage(lz4Kernel(elf), 27)},
		{name: "gzip bzImage", image: makeBzImage(gzipBytes(elf), 27)},
		{name: "not a kernel", image: []byte("nope"), wantErr: "not a bzImage"},
		{name: "canceled", image: makeBzImage(lz4Kernel(elf), 27), cancel: true, wantErr: "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			k := Kernel{Path: filepath.Join(dir, "vmlinuz-test")}
			if err := os.WriteFile(k.Path, tt.image, 0o644); err != nil {
				t.Fatal(err)
			}
			cache := filepath.Join(dir, "cache")
			ctx, cancel := context.WithCancel(t.Context())
			if tt.cancel {
				cancel()
			}
			defer cancel()

			got, err := Prepare(ctx, k, cache)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Prepare error = %v, want one containing %q", err, tt.wantErr)
				}
				if entries, _ := os.ReadDir(cache); len(entries) != 0 {
					t.Fatalf("failed Prepare left %d cache entries", len(entries))
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if !strings.HasPrefix(filepath.Base(got), "vmlinux-") || len(filepath.Base(got)) != len("vmlinux-")+16 {
				t.Fatalf("Prepare = %q, want <cache>/vmlinux-<16 hex>", got)
			}
			data, err := os.ReadFile(got)
			if err != nil || !bytes.Equal(data, elf) {
				t.Fatalf("cached vmlinux differs from the extracted one (err %v)", err)
			}

			// A second call reuses the entry without extracting again.
			if err := os.WriteFile(got, []byte("marker"), 0o644); err != nil {
				t.Fatal(err)
			}
			again, err := Prepare(t.Context(), k, cache)
			if err != nil || again != got {
				t.Fatalf("second Prepare = %q, %v; want %q", again, err, got)
			}
			if data, _ := os.ReadFile(got); string(data) != "marker" {
				t.Fatalf("second Prepare rewrote the cache entry")
			}
		})
	}
}

func TestPrepareConcurrent(t *testing.T) {
	dir := t.TempDir()
	elf := makeELF(elfOptions{pad: 3 << 20})
	k := Kernel{Path: filepath.Join(dir, "vmlinuz-test")}
	if err := os.WriteFile(k.Path, makeBzImage(lz4Kernel(elf), 27), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	const n = 8
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { paths[i], errs[i] = Prepare(t.Context(), k, cache) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("caller %d: Prepare = %q, %v; want %q", i, paths[i], errs[i], paths[0])
		}
	}
	entries, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("cache holds %d entries, want 1 (temporary files left behind?)", len(entries))
	}
	if data, _ := os.ReadFile(paths[0]); !bytes.Equal(data, elf) {
		t.Fatalf("cached vmlinux is corrupt")
	}
}
