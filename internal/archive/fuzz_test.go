package archive

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func FuzzRead(f *testing.F) {
	data := []byte("some disk bytes\x00\x00\x00\x00 and more")
	mem := member("disk.qcow2", data)
	other := member("other", []byte("x"))
	man, sums := reg(ManifestName, manifestJSON(f, mem)), reg(ChecksumsName, checksumsJSON(f, mem))
	good := []entry{man, reg("disk.qcow2", data), sums}
	goodTar := rawTar(f, good, false)
	f.Add(compress(f, goodTar))
	f.Add(goodTar)
	f.Add([]byte{})
	f.Add(compress(f, rawTar(f, []entry{man, {hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "disk.qcow2", Linkname: "../x"}}, sums}, false)))
	f.Add(compress(f, rawTar(f, []entry{man, reg("../disk.qcow2", data), sums}, false)))
	f.Add(compress(f, rawTar(f, []entry{man, good[1], good[1], sums}, false)))
	f.Add(compress(f, rawTar(f, []entry{man, good[1]}, false)))
	f.Add(compress(f, rawTar(f, []entry{man, good[1], sums, sums}, false)))
	f.Add(compress(f, rawTar(f, []entry{man, sums, good[1]}, false)))
	f.Add(compress(f, rawTar(f, []entry{man, good[1], reg(ChecksumsName, checksumsJSON(f, mem, other))}, false)))
	f.Add(compress(f, rawTar(f, []entry{reg(ManifestName, manifestJSON(f, mem, other)), good[1], reg("other", []byte("x")), reg(ChecksumsName, checksumsJSON(f, mem, other))}, false)))

	f.Fuzz(func(t *testing.T, archive []byte) {
		root := t.TempDir()
		path := filepath.Join(root, "in.boxlite")
		if err := os.WriteFile(path, archive, 0o644); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, "dst")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		m, err := Read(t.Context(), path, dst, Limits{MaxMemberSize: 1 << 20, MaxTotalSize: 1 << 20})
		if err != nil {
			if !errors.Is(err, ErrBadArchive) {
				t.Fatalf("Read = %v, want ErrBadArchive", err)
			}
			assertEmpty(t, dst)
		} else {
			entries, _ := os.ReadDir(dst)
			if len(entries) != len(m.Members) {
				t.Fatalf("dst holds %d entries, manifest lists %d", len(entries), len(m.Members))
			}
			for _, mem := range m.Members {
				if fi, err := os.Lstat(filepath.Join(dst, mem.Name)); err != nil || !fi.Mode().IsRegular() || fi.Size() != mem.Size {
					t.Fatalf("member %q: %v, %v", mem.Name, fi, err)
				}
			}
		}
		outside, _ := os.ReadDir(root)
		if len(outside) != 2 {
			t.Fatalf("Read wrote outside dst: %d entries in its parent", len(outside))
		}
	})
}
