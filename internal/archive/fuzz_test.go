package archive

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func FuzzRead(f *testing.F) {
	data := []byte("some disk bytes\x00\x00\x00\x00 and more")
	sum := sha256.Sum256(data)
	man, err := json.Marshal(Manifest{
		FormatVersion: FormatVersion, CreatedAt: time.Unix(1700000000, 0).UTC(), Box: testBox, Image: "img",
		Members: []Member{{Name: "disk.qcow2", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}},
	})
	if err != nil {
		f.Fatal(err)
	}
	good := []entry{reg(ManifestName, man), reg("disk.qcow2", data)}
	goodTar := rawTar(f, good, false)
	f.Add(compress(f, goodTar))
	f.Add(goodTar)
	f.Add([]byte{})
	f.Add(compress(f, rawTar(f, []entry{good[0], {hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "disk.qcow2", Linkname: "../x"}}}, false)))
	f.Add(compress(f, rawTar(f, []entry{good[0], reg("../disk.qcow2", data)}, false)))
	f.Add(compress(f, rawTar(f, []entry{good[0], good[1], good[1]}, false)))

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
