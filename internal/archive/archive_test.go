package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

var testBox = json.RawMessage(`{"cpus":2,"memory_mib":512}`)

// sparseFile writes a file of size bytes at path: mostly holes, with
// random data at a few offsets.
func sparseFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, seed))
	chunk := make([]byte, 256<<10)
	for _, off := range []int64{0, size / 3, size / 2, size - int64(len(chunk))} {
		for i := range chunk {
			chunk[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("boxlite "), 4096), size/4); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeArchive(t *testing.T, files map[string]string) (string, Manifest) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "box.boxlite")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Write(t.Context(), f, testBox, "docker.io/library/alpine:3.20", files)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, m
}

func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	disk := filepath.Join(src, "disk")
	sparseFile(t, disk, 50<<20, 1)
	notes := filepath.Join(src, "notes")
	if err := os.WriteFile(notes, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(src, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"disk.qcow2": disk, "notes.txt": notes, "empty": empty}
	path, wrote := writeArchive(t, files)

	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if fi.Size() > 4<<20 {
		t.Errorf("archive is %d bytes, want it compressed below 4 MiB", fi.Size())
	}
	if wrote.FormatVersion != FormatVersion || wrote.Image != "docker.io/library/alpine:3.20" || len(wrote.Members) != 3 {
		t.Fatalf("Write manifest = %+v", wrote)
	}
	if names := []string{wrote.Members[0].Name, wrote.Members[1].Name, wrote.Members[2].Name}; strings.Join(names, ",") != "disk.qcow2,empty,notes.txt" {
		t.Errorf("members in order %v, want sorted", names)
	}

	dst := t.TempDir()
	read, err := Read(t.Context(), path, dst, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !read.CreatedAt.Equal(wrote.CreatedAt) || !bytes.Equal(read.Box, testBox) || read.Image != wrote.Image {
		t.Errorf("Read manifest = %+v, want %+v", read, wrote)
	}
	for i, mem := range read.Members {
		if mem != wrote.Members[i] {
			t.Errorf("member %d = %+v, want %+v", i, mem, wrote.Members[i])
		}
		got := filepath.Join(dst, mem.Name)
		fi, err := os.Stat(got)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != mem.Size {
			t.Errorf("%s: %d bytes, want %d", mem.Name, fi.Size(), mem.Size)
		}
		if sum, want := fileSum(t, got), fileSum(t, files[mem.Name]); sum != want || sum != mem.SHA256 {
			t.Errorf("%s: sha256 %s, want %s (manifest %s)", mem.Name, sum, want, mem.SHA256)
		}
	}
	entries, _ := os.ReadDir(dst)
	if len(entries) != 3 {
		t.Errorf("dst holds %d entries, want 3", len(entries))
	}
}

func TestWriteRefuses(t *testing.T) {
	src := t.TempDir()
	file := filepath.Join(src, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		box   json.RawMessage
		files map[string]string
		want  error
	}{
		{"dotdot", t.Context(), testBox, map[string]string{"..": file}, errdefs.ErrInvalidArgument},
		{"slash", t.Context(), testBox, map[string]string{"a/b": file}, errdefs.ErrInvalidArgument},
		{"absolute", t.Context(), testBox, map[string]string{"/etc/passwd": file}, errdefs.ErrInvalidArgument},
		{"empty name", t.Context(), testBox, map[string]string{"": file}, errdefs.ErrInvalidArgument},
		{"manifest name", t.Context(), testBox, map[string]string{ManifestName: file}, errdefs.ErrInvalidArgument},
		{"checksums name", t.Context(), testBox, map[string]string{ChecksumsName: file}, errdefs.ErrInvalidArgument},
		{"hidden", t.Context(), testBox, map[string]string{".x": file}, errdefs.ErrInvalidArgument},
		{"directory", t.Context(), testBox, map[string]string{"d": src}, errdefs.ErrInvalidArgument},
		{"missing file", t.Context(), testBox, map[string]string{"m": filepath.Join(src, "nope")}, os.ErrNotExist},
		{"bad box json", t.Context(), json.RawMessage(`{`), map[string]string{"f": file}, errdefs.ErrInvalidArgument},
		{"canceled", canceled, testBox, map[string]string{"f": file}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Write(tt.ctx, io.Discard, tt.box, "img", tt.files)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Write = %v, want %v", err, tt.want)
			}
		})
	}
}

// onWrite calls fn before the first Write it passes on.
type onWrite struct {
	w    io.Writer
	fn   func()
	done bool
}

func (o *onWrite) Write(p []byte) (int, error) {
	if !o.done {
		o.done = true
		o.fn()
	}
	return o.w.Write(p)
}

func TestWriteFileChanges(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(path string) error
	}{
		{"grows", func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("x"))
			return err
		}},
		{"shrinks", func(path string) error { return os.Truncate(path, 1<<20) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk")
			sparseFile(t, disk, 64<<20, 2)
			var cerr error
			w := &onWrite{w: io.Discard, fn: func() { cerr = tt.change(disk) }}
			_, err := Write(t.Context(), w, testBox, "img", map[string]string{"disk.qcow2": disk})
			if cerr != nil {
				t.Fatal(cerr)
			}
			if err == nil || !strings.Contains(err.Error(), "while the archive was written") {
				t.Fatalf("Write = %v, want the file's change reported", err)
			}
		})
	}
}

// TestWriteLayout checks the tar stream Write produces: manifest.json
// without sha256s, the members, then checksums.json.
func TestWriteLayout(t *testing.T) {
	src := t.TempDir()
	a, b := filepath.Join(src, "a"), filepath.Join(src, "b")
	os.WriteFile(a, []byte("alpha"), 0o644)
	os.WriteFile(b, nil, 0o644)
	path, m := writeArchive(t, map[string]string{"b": b, "a": a})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var names []string
	contents := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		contents[hdr.Name], _ = io.ReadAll(tr)
	}
	if got := strings.Join(names, ","); got != "manifest.json,a,b,checksums.json" {
		t.Fatalf("entries %s", got)
	}
	want := `{"format_version":2,"created_at":"` + m.CreatedAt.Format(time.RFC3339) + `","box":{"cpus":2,"memory_mib":512},"image":"docker.io/library/alpine:3.20",` +
		`"members":[{"name":"a","size":5},{"name":"b","size":0}]}` + "\n"
	if got := string(contents[ManifestName]); got != want {
		t.Errorf("manifest.json = %s, want %s", got, want)
	}
	sumA, sumB := member("a", []byte("alpha")).SHA256, member("b", nil).SHA256
	want = `{"members":[{"name":"a","sha256":"` + sumA + `"},{"name":"b","sha256":"` + sumB + `"}]}` + "\n"
	if got := string(contents[ChecksumsName]); got != want {
		t.Errorf("checksums.json = %s, want %s", got, want)
	}
	if m.Members[0].SHA256 != sumA || m.Members[1].SHA256 != sumB {
		t.Errorf("Write manifest members %+v", m.Members)
	}
}

// entry is one tar entry of a hand-made archive.
type entry struct {
	hdr  tar.Header
	data []byte
}

func reg(name string, data []byte) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644}, data: data}
}

func member(name string, data []byte) Member {
	sum := sha256.Sum256(data)
	return Member{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

// manifestJSON returns manifest.json listing members (without their
// sha256s, which go to checksums.json).
func manifestJSON(t testing.TB, members ...Member) []byte {
	t.Helper()
	version, created, image := FormatVersion, time.Unix(1700000000, 0).UTC(), "img"
	wm := make([]wireMember, len(members))
	for i, m := range members {
		wm[i] = wireMember{Name: m.Name, Size: &members[i].Size}
	}
	b, err := json.Marshal(wireManifest{FormatVersion: &version, CreatedAt: &created, Box: testBox, Image: &image, Members: &wm})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checksumsJSON returns checksums.json listing members' sha256s.
func checksumsJSON(t testing.TB, members ...Member) []byte {
	t.Helper()
	sums := make([]wireChecksum, len(members))
	for i, m := range members {
		sums[i] = wireChecksum{Name: m.Name, SHA256: m.SHA256}
	}
	b, err := json.Marshal(wireChecksums{Members: &sums})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawTar builds an uncompressed tar of entries; unclosed leaves out the
// end-of-archive marker.
func rawTar(t testing.TB, entries []entry, unclosed bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if !unclosed {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	} else {
		tw.Flush()
	}
	return buf.Bytes()
}

func compress(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x55
	return c
}

func TestReadRefusesBadArchives(t *testing.T) {
	disk := bytes.Repeat([]byte("disk data "), 10000)
	disk = append(disk, make([]byte, 100000)...)
	for i := range 20000 {
		disk = append(disk, byte(i*7))
	}
	other := []byte("other")
	diskM, otherM := member("disk.qcow2", disk), member("other", other)

	man := reg(ManifestName, manifestJSON(t, diskM))
	sums := reg(ChecksumsName, checksumsJSON(t, diskM))
	good := []entry{man, reg("disk.qcow2", disk), sums}
	goodTar := rawTar(t, good, false)
	goodZ := compress(t, goodTar)
	if _, err := Read(t.Context(), writeBytes(t, goodZ), t.TempDir(), Limits{}); err != nil {
		t.Fatalf("the well-formed base archive is refused: %v", err)
	}
	// Two members: disk.qcow2 and other.
	man2 := reg(ManifestName, manifestJSON(t, diskM, otherM))
	sums2 := reg(ChecksumsName, checksumsJSON(t, diskM, otherM))
	if _, err := Read(t.Context(), writeBytes(t, compress(t, rawTar(t, []entry{man2, good[1], reg("other", other), sums2}, false))), t.TempDir(), Limits{}); err != nil {
		t.Fatalf("the well-formed two-member archive is refused: %v", err)
	}
	z := func(entries ...entry) []byte { return compress(t, rawTar(t, entries, false)) }
	rawManifest := func(s string) entry { return reg(ManifestName, []byte(s)) }
	rawSums := func(s string) entry { return reg(ChecksumsName, []byte(s)) }
	huge := Member{Name: "disk.qcow2", Size: 1 << 50, SHA256: diskM.SHA256}
	flippedDisk := flip(disk, 5000)
	wrongSum := diskM
	wrongSum.SHA256 = otherM.SHA256
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rand.Uint32())
	}
	const created = `"created_at":"2023-11-14T22:13:20Z"`

	tests := []struct {
		name    string
		archive []byte
		limits  Limits
		want    string // in the message
	}{
		{"empty file", nil, Limits{}, "empty file"},
		{"random bytes", random, Limits{}, "not zstd"},
		{"plain tar", goodTar, Limits{}, "not zstd"},
		{"zstd of random bytes", compress(t, random), Limits{}, "not a boxlite archive"},
		{"zstd of nothing", compress(t, nil), Limits{}, "not a boxlite archive"},
		{"truncated after magic", goodZ[:4], Limits{}, "truncated"},
		{"truncated at 10", goodZ[:10], Limits{}, "truncated"},
		{"truncated at 1/4", goodZ[:len(goodZ)/4], Limits{}, "truncated"},
		{"truncated at 1/2", goodZ[:len(goodZ)/2], Limits{}, "truncated"},
		{"truncated by 10", goodZ[:len(goodZ)-10], Limits{}, "truncated"},
		{"truncated by 1", goodZ[:len(goodZ)-1], Limits{}, "truncated"},
		{"flipped in frame header", flip(goodZ, 4), Limits{}, ""},
		{"flipped at 1/3", flip(goodZ, len(goodZ)/3), Limits{}, ""},
		{"flipped at 1/2", flip(goodZ, len(goodZ)/2), Limits{}, ""},
		{"flipped in checksum", flip(goodZ, len(goodZ)-2), Limits{}, ""},
		{"garbage after the stream", append(bytes.Clone(goodZ), "junk"...), Limits{}, ""},
		{"member recompressed after a flip", z(man, reg("disk.qcow2", flippedDisk), sums), Limits{}, `member "disk.qcow2": sha256 mismatch`},
		{"tar without end marker", compress(t, rawTar(t, good, true)), Limits{}, "end-of-archive"},
		{"data after the tar stream", compress(t, append(bytes.Clone(goodTar), "more"...)), Limits{}, "after the end"},
		{"manifest not first", z(good[1], man, sums), Limits{}, "first entry"},
		{"checksums first", z(sums, man, good[1]), Limits{}, "first entry"},
		{"manifest only entry missing", z(reg("x", nil)), Limits{}, "first entry"},
		{"format version 1", z(rawManifest(`{"format_version":1,"members":[]}`)), Limits{}, "format version 1 not supported"},
		{"unknown format version", z(rawManifest(`{"format_version":3,"members":[]}`)), Limits{}, "unsupported format version 3"},
		{"no format version", z(rawManifest(`{"members":[]}`)), Limits{}, "no format_version"},
		{"manifest not json", z(rawManifest(`not json`)), Limits{}, ManifestName},
		{"manifest unknown key", z(rawManifest(`{"format_version":2,` + created + `,"box":{},"image":"","members":[],"extra":1}`)), Limits{}, "unknown field"},
		{"manifest trailing data", z(rawManifest(`{"format_version":2,` + created + `,"box":{},"image":"","members":[]} {}`)), Limits{}, "after top-level value"},
		{"manifest no created_at", z(rawManifest(`{"format_version":2,"box":{},"image":"","members":[]}`)), Limits{}, "no created_at"},
		{"manifest no box", z(rawManifest(`{"format_version":2,` + created + `,"image":"","members":[]}`)), Limits{}, "no box options"},
		{"manifest no image", z(rawManifest(`{"format_version":2,` + created + `,"box":{},"members":[]}`)), Limits{}, "no image"},
		{"manifest no members", z(rawManifest(`{"format_version":2,` + created + `,"box":{},"image":""}`)), Limits{}, "no members"},
		{"manifest member no size", z(rawManifest(`{"format_version":2,` + created + `,"box":{},"image":"","members":[{"name":"x"}]}`)), Limits{}, "no size"},
		{"manifest member sha256", z(rawManifest(`{"format_version":2,` + created + `,"box":{},"image":"","members":[{"name":"x","size":0,"sha256":"` + otherM.SHA256 + `"}]}`)), Limits{}, "unknown field"},
		{"manifest negative size", z(reg(ManifestName, manifestJSON(t, Member{Name: "disk.qcow2", Size: -1}))), Limits{}, "negative"},
		{"manifest member dotdot", z(reg(ManifestName, manifestJSON(t, member("..", other))), reg("..", other)), Limits{}, "not a plain file name"},
		{"manifest member absolute", z(reg(ManifestName, manifestJSON(t, member("/etc/x", other))), reg("/etc/x", other)), Limits{}, "not a plain file name"},
		{"manifest member checksums.json", z(reg(ManifestName, manifestJSON(t, member(ChecksumsName, other))), reg(ChecksumsName, other)), Limits{}, "not a plain file name"},
		{"manifest member listed twice", z(reg(ManifestName, manifestJSON(t, otherM, otherM)), reg("other", other), reg("other", other)), Limits{}, "listed twice"},
		{"manifest symlink", z(entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: ManifestName, Linkname: "/etc/passwd"}}), Limits{}, "symbolic link"},
		{"manifest hardlink", z(good[1], entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: ManifestName, Linkname: "disk.qcow2"}}), Limits{}, "first entry"},
		{"entry dotdot", z(man, reg("../disk.qcow2", disk), sums), Limits{}, "not a plain file name"},
		{"entry absolute", z(man, reg("/tmp/disk.qcow2", disk), sums), Limits{}, "not a plain file name"},
		{"entry in a directory", z(man, reg("dir/disk.qcow2", disk), sums), Limits{}, "not a plain file name"},
		{"entry dot slash", z(man, reg("./disk.qcow2", disk), sums), Limits{}, "not a plain file name"},
		{"symlink member", z(man, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "disk.qcow2", Linkname: "/etc/passwd"}}, sums), Limits{}, "symbolic link"},
		{"hardlink member", z(man, entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "disk.qcow2", Linkname: ManifestName}}, sums), Limits{}, "hard link"},
		{"directory entry", z(man, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "disk.qcow2/", Mode: 0o755}}, sums), Limits{}, ""},
		{"directory entry plain name", z(man, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "disk.qcow2", Mode: 0o755}}, sums), Limits{}, "directory"},
		{"device entry", z(man, entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "disk.qcow2", Devmajor: 1, Devminor: 3}}, sums), Limits{}, "device"},
		{"fifo entry", z(man, entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "disk.qcow2"}}, sums), Limits{}, "fifo"},
		{"duplicate member", z(man, good[1], good[1], sums), Limits{}, `duplicate member "disk.qcow2"`},
		{"duplicate member after checksums", z(man, good[1], sums, good[1]), Limits{}, `entry "disk.qcow2" after checksums.json`},
		{"extra member", z(man, good[1], reg("other", other), sums), Limits{}, `"other" is not in the manifest`},
		{"extra member first", z(man, reg("other", other), good[1], sums), Limits{}, `"other" is not in the manifest`},
		{"extra member last", z(man, good[1], sums, reg("other", other)), Limits{}, `entry "other" after checksums.json`},
		{"missing member", z(man, sums), Limits{}, `member "disk.qcow2" missing: checksums.json comes before it`},
		{"missing member and checksums", z(man), Limits{}, `member "disk.qcow2" missing`},
		{"missing second member", z(man2, good[1], sums2), Limits{}, `member "other" missing`},
		{"members out of order", z(man2, reg("other", other), good[1], sums2), Limits{}, "out of order"},
		{"header size differs", z(reg(ManifestName, manifestJSON(t, member("disk.qcow2", disk[:100]))), good[1], sums), Limits{}, "tar header says"},
		{"huge member", z(reg(ManifestName, manifestJSON(t, huge))), Limits{}, "over the limit"},
		{"over member limit", goodZ, Limits{MaxMemberSize: 1000}, "over the limit of 1000"},
		{"over total limit", z(man2, good[1], reg("other", other), sums2), Limits{MaxTotalSize: diskM.Size + 1}, "total more than"},

		// checksums.json
		{"checksums missing", z(man, good[1]), Limits{}, "checksums.json missing"},
		{"checksums missing, two members", z(man2, good[1], reg("other", other)), Limits{}, "checksums.json missing"},
		{"checksums not last", z(man2, good[1], sums2, reg("other", other)), Limits{}, `member "other" missing: checksums.json comes before it`},
		{"checksums duplicate", z(man, good[1], sums, sums), Limits{}, "duplicate checksums.json"},
		{"checksums listing an extra member", z(man, good[1], reg(ChecksumsName, checksumsJSON(t, diskM, otherM))), Limits{}, `lists "other", not a member`},
		{"checksums missing a member", z(man2, good[1], reg("other", other), sums), Limits{}, `member "other" not listed`},
		{"checksums listing no member", z(man, good[1], reg(ChecksumsName, checksumsJSON(t))), Limits{}, `member "disk.qcow2" not listed`},
		{"checksums out of order", z(man2, good[1], reg("other", other), reg(ChecksumsName, checksumsJSON(t, otherM, diskM))), Limits{}, `lists "other" where the manifest has member "disk.qcow2"`},
		{"checksums listing a member twice", z(man, good[1], reg(ChecksumsName, checksumsJSON(t, diskM, diskM))), Limits{}, `lists "disk.qcow2", not a member`},
		{"checksums wrong sum", z(man, good[1], reg(ChecksumsName, checksumsJSON(t, wrongSum))), Limits{}, `member "disk.qcow2": sha256 mismatch`},
		{"checksums upper-case sum", z(man, good[1], rawSums(`{"members":[{"name":"disk.qcow2","sha256":"`+strings.ToUpper(diskM.SHA256)+`"}]}`)), Limits{}, "lower-case hex"},
		{"checksums bad sum", z(man, good[1], reg(ChecksumsName, checksumsJSON(t, Member{Name: "disk.qcow2", SHA256: "abc"}))), Limits{}, "lower-case hex"},
		{"checksums not json", z(man, good[1], rawSums("not json")), Limits{}, ChecksumsName},
		{"checksums unknown key", z(man, good[1], rawSums(`{"members":[{"name":"disk.qcow2","sha256":"`+diskM.SHA256+`"}],"extra":1}`)), Limits{}, "unknown field"},
		{"checksums member unknown key", z(man, good[1], rawSums(`{"members":[{"name":"disk.qcow2","sha256":"`+diskM.SHA256+`","size":1}]}`)), Limits{}, "unknown field"},
		{"checksums trailing data", z(man, good[1], rawSums(`{"members":[{"name":"disk.qcow2","sha256":"`+diskM.SHA256+`"}]} {}`)), Limits{}, "data after the JSON value"},
		{"checksums no members", z(man, good[1], rawSums(`{}`)), Limits{}, "checksums.json: no members"},
		{"checksums symlink", z(man, good[1], entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: ChecksumsName, Linkname: "/etc/passwd"}}), Limits{}, "symbolic link"},
		{"checksums too big", z(man, good[1], reg(ChecksumsName, make([]byte, MaxChecksumsSize+1))), Limits{}, "over the limit"},
		{"checksums truncated", compress(t, rawTar(t, good, true)[:len(rawTar(t, good, true))-512]), Limits{}, "truncated"},
		{"entry after checksums", z(man, good[1], sums, reg("x", nil)), Limits{}, `entry "x" after checksums.json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			_, err := Read(t.Context(), writeBytes(t, tt.archive), dst, tt.limits)
			checkRefused(t, err, dst, tt.want)
		})
	}
}

func TestReadHugeClaimNotExtracted(t *testing.T) {
	// The tar header claims a petabyte as well; Read must refuse from the
	// manifest alone, before creating the file.
	m := Member{Name: "disk.qcow2", Size: 1 << 50, SHA256: strings.Repeat("0", 64)}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	man := manifestJSON(t, m)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Size: int64(len(man))})
	tw.Write(man)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "disk.qcow2", Size: 1 << 50})
	tw.Write(make([]byte, 1<<16))
	tw.Flush()
	archive := compress(t, buf.Bytes())

	for _, tt := range []struct {
		name   string
		limits Limits
		want   string
	}{
		{"default limits", Limits{}, "over the limit"},
		{"no room on disk", Limits{MaxMemberSize: 1 << 60, MaxTotalSize: 1 << 60}, "free"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			_, err := Read(t.Context(), writeBytes(t, archive), dst, tt.limits)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %v, want ErrInvalidArgument mentioning %q", err, tt.want)
			}
			assertEmpty(t, dst)
		})
	}
}

func TestReadCallerErrors(t *testing.T) {
	src := t.TempDir()
	f := filepath.Join(src, "f")
	if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	path, _ := writeArchive(t, map[string]string{"f": f})

	t.Run("dst not empty", func(t *testing.T) {
		dst := t.TempDir()
		os.WriteFile(filepath.Join(dst, "keep"), nil, 0o644)
		_, err := Read(t.Context(), path, dst, Limits{})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, ErrBadArchive) {
			t.Fatalf("Read = %v, want ErrInvalidArgument but not ErrBadArchive", err)
		}
	})
	t.Run("archive missing", func(t *testing.T) {
		_, err := Read(t.Context(), filepath.Join(src, "nope"), t.TempDir(), Limits{})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Read = %v, want ErrNotFound", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		dst := t.TempDir()
		_, err := Read(ctx, path, dst, Limits{})
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrBadArchive) {
			t.Fatalf("Read = %v, want context.Canceled", err)
		}
		assertEmpty(t, dst)
	})
	t.Run("negative limits", func(t *testing.T) {
		_, err := Read(t.Context(), path, t.TempDir(), Limits{MaxTotalSize: -1})
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("Read = %v, want ErrInvalidArgument", err)
		}
	})
}

func writeBytes(t testing.TB, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.boxlite")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func checkRefused(t *testing.T, err error, dst, want string) {
	t.Helper()
	var fe *FormatError
	if !errors.Is(err, ErrBadArchive) || !errors.Is(err, errdefs.ErrInvalidArgument) || !errors.As(err, &fe) {
		t.Fatalf("Read = %v, want a *FormatError (ErrBadArchive)", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Read = %q, want it to mention %q", err, want)
	}
	assertEmpty(t, dst)
}

func assertEmpty(t testing.TB, dst string) {
	t.Helper()
	entries, err := os.ReadDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("dst holds %d entries (%s...), want none", len(entries), entries[0].Name())
	}
}
