package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ent is one tar entry of a hand-built layer.
type ent struct {
	name string
	typ  byte
	mode int64
	body string // file content, or link target
	uid  int
	gid  int
	pax  map[string]string
}

func dir(n string) ent        { return ent{name: n, typ: tar.TypeDir, mode: 0o755} }
func file(n, body string) ent { return ent{name: n, typ: tar.TypeReg, mode: 0o644, body: body} }
func symlink(n, target string) ent {
	return ent{name: n, typ: tar.TypeSymlink, mode: 0o777, body: target}
}
func hardlink(n, target string) ent {
	return ent{name: n, typ: tar.TypeLink, mode: 0o644, body: target}
}
func whiteout(dirName, n string) ent { return file(filepath.Join(dirName, ".wh."+n), "") }

func layerTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: time.Unix(1700000000, 0), PAXRecords: e.pax, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeReg:
			h.Size = int64(len(e.body))
		case tar.TypeSymlink, tar.TypeLink:
			h.Linkname = e.body
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// applyLayers unpacks layers into root the way Unpack does.
func applyLayers(ctx context.Context, root string, layers ...[]byte) (map[string]Entry, error) {
	u := newUnpacker(root)
	for _, l := range layers {
		if err := u.apply(ctx, bytes.NewReader(l)); err != nil {
			return nil, err
		}
	}
	list, err := u.finish()
	if err != nil {
		return nil, err
	}
	m := map[string]Entry{}
	for _, e := range list {
		m[e.Path] = e
	}
	return m, nil
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func assertMissing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists (%v)", p, err)
	}
}

func TestApplyLayers(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]ent
		check  func(t *testing.T, root string, es map[string]Entry)
	}{
		{
			name: "whiteout file",
			layers: [][]ent{
				{dir("a/"), file("a/f1", "1"), file("a/f2", "2")},
				{whiteout("a", "f1")},
			},
			check: func(t *testing.T, root string, es map[string]Entry) {
				assertMissing(t, filepath.Join(root, "a/f1"))
				if readFile(t, filepath.Join(root, "a/f2")) != "2" {
					t.Fatal("a/f2 lost")
				}
				if _, ok := es["a/f1"]; ok {
					t.Fatal("entry for whited-out a/f1")
				}
				if _, ok := es["a/.wh.f1"]; ok {
					t.Fatal("whiteout file materialised")
				}
			},
		},
		{
			name: "whiteout directory",
			layers: [][]ent{
				{dir("d/"), dir("d/sub/"), file("d/sub/x", "x")},
				{whiteout("", "d")},
			},
			check: func(t *testing.T, root string, es map[string]Entry) {
				assertMissing(t, filepath.Join(root, "d"))
				if len(es) != 0 {
					t.Fatalf("entries left: %v", es)
				}
			},
		},
		{
			name: "opaque directory",
			layers: [][]ent{
				{dir("d/"), file("d/old", "o"), dir("d/sub/"), file("d/sub/x", "x"), file("keep", "k")},
				{dir("d/"), file("d/new", "n"), file("d/.wh..wh..opq", ""), file("d/sub/y", "y")},
			},
			check: func(t *testing.T, root string, es map[string]Entry) {
				assertMissing(t, filepath.Join(root, "d/old"))
				assertMissing(t, filepath.Join(root, "d/sub/x"))
				if readFile(t, filepath.Join(root, "d/new")) != "n" || readFile(t, filepath.Join(root, "d/sub/y")) != "y" {
					t.Fatal("same-layer entries lost")
				}
				if readFile(t, filepath.Join(root, "keep")) != "k" {
					t.Fatal("sibling lost")
				}
				if _, ok := es["d/old"]; ok {
					t.Fatal("entry for d/old")
				}
			},
		},
		{
			name: "hard links and symlinks",
			layers: [][]ent{{
				file("f", "data"), hardlink("h", "f"), symlink("s", "/etc/passwd"), symlink("rel", "../../f"),
				dir("bin/"), hardlink("bin/h2", "f"),
			}},
			check: func(t *testing.T, root string, es map[string]Entry) {
				fi1, _ := os.Stat(filepath.Join(root, "f"))
				for _, h := range []string{"h", "bin/h2"} {
					fi2, err := os.Stat(filepath.Join(root, h))
					if err != nil || !os.SameFile(fi1, fi2) {
						t.Fatalf("%s is not a hard link of f", h)
					}
				}
				for n, want := range map[string]string{"s": "/etc/passwd", "rel": "../../f"} {
					got, err := os.Readlink(filepath.Join(root, n))
					if err != nil || got != want {
						t.Fatalf("symlink %s -> %q, %v", n, got, err)
					}
					if es[n].Type != tar.TypeSymlink || es[n].Linkname != want {
						t.Fatalf("entry %+v", es[n])
					}
				}
				if es["h"].Type != tar.TypeLink || es["h"].Linkname != "f" {
					t.Fatalf("entry %+v", es["h"])
				}
			},
		},
		{
			name: "modes and owners",
			layers: [][]ent{{
				{name: "ro/", typ: tar.TypeDir, mode: 0o555, uid: 7, gid: 8},
				{name: "ro/suid", typ: tar.TypeReg, mode: 0o4755, body: "x", uid: 1000, gid: 1001},
				{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
				{name: "secret", typ: tar.TypeReg, mode: 0o000, body: "s"},
				{name: "x", typ: tar.TypeReg, mode: 0o644, body: "x", pax: map[string]string{"SCHILY.xattr.user.test": "v"}},
			}},
			check: func(t *testing.T, root string, es map[string]Entry) {
				if e := es["ro/suid"]; e.Mode != fs.ModeSetuid|0o755 || e.UID != 1000 || e.GID != 1001 {
					t.Fatalf("entry %+v", e)
				}
				if e := es["ro"]; e.Mode != 0o555 || e.UID != 7 {
					t.Fatalf("entry %+v", e)
				}
				if e := es["tmp"]; e.Mode != fs.ModeSticky|0o777 {
					t.Fatalf("entry %+v", e)
				}
				if es["x"].Xattrs["user.test"] != "v" {
					t.Fatalf("xattrs %+v", es["x"])
				}
				fi, _ := os.Lstat(filepath.Join(root, "ro/suid"))
				if fi.Mode()&fs.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
					t.Fatalf("on disk mode %v", fi.Mode())
				}
				if fi.ModTime().Unix() != 1700000000 {
					t.Fatalf("mtime %v", fi.ModTime())
				}
				fi, _ = os.Lstat(filepath.Join(root, "tmp"))
				if fi.Mode()&fs.ModeSticky == 0 {
					t.Fatalf("tmp mode %v", fi.Mode())
				}
				fi, _ = os.Lstat(filepath.Join(root, "ro"))
				wantDir := fs.FileMode(0o555)
				if os.Geteuid() != 0 {
					wantDir = 0o755
				}
				if fi.Mode().Perm() != wantDir {
					t.Fatalf("ro mode %v, want %v", fi.Mode(), wantDir)
				}
				if os.Geteuid() == 0 {
					st := fi.Sys().(*syscall.Stat_t)
					if st.Uid != 7 || st.Gid != 8 {
						t.Fatalf("ro owner %d:%d", st.Uid, st.Gid)
					}
				}
			},
		},
		{
			name: "replace file by dir and dir by symlink",
			layers: [][]ent{
				{file("a", "file"), dir("b/"), file("b/x", "x")},
				{dir("a/"), file("a/in", "in"), symlink("b", "a")},
			},
			check: func(t *testing.T, root string, es map[string]Entry) {
				if readFile(t, filepath.Join(root, "a/in")) != "in" {
					t.Fatal("a/in")
				}
				if l, _ := os.Readlink(filepath.Join(root, "b")); l != "a" {
					t.Fatalf("b -> %q", l)
				}
				if _, ok := es["b/x"]; ok {
					t.Fatal("stale entry b/x")
				}
			},
		},
		{
			name:   "implicit parents",
			layers: [][]ent{{file("deep/er/f", "f")}},
			check: func(t *testing.T, root string, es map[string]Entry) {
				if readFile(t, filepath.Join(root, "deep/er/f")) != "f" || es["deep/er"].Type != tar.TypeDir {
					t.Fatalf("entries %v", es)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			var layers [][]byte
			for _, l := range tt.layers {
				layers = append(layers, layerTar(t, l...))
			}
			es, err := applyLayers(t.Context(), root, layers...)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, root, es)
		})
	}
}

// listTree returns every path under dir, relative, sorted.
func listTree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			r, _ := filepath.Rel(dir, p)
			out = append(out, r)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func TestApplyUnsafeLayers(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]ent
	}{
		{"dot-dot", [][]ent{{file("../escape", "x")}}},
		{"nested dot-dot", [][]ent{{dir("a/"), file("a/../../escape", "x")}}},
		{"absolute path", [][]ent{{file("/escape", "x")}}},
		{"write through symlink", [][]ent{{symlink("evil", "../outside"), file("evil/pwned", "x")}}},
		{"write through absolute symlink", [][]ent{{symlink("evil", "/"), file("evil/pwned", "x")}}},
		{"write through symlink of lower layer", [][]ent{{symlink("evil", "../outside")}, {file("evil/pwned", "x")}}},
		{"mkdir through symlink", [][]ent{{symlink("evil", "../outside"), dir("evil/sub/")}}},
		{"whiteout through symlink", [][]ent{{symlink("evil", "../outside")}, {whiteout("evil", "secret")}}},
		{"opaque through symlink", [][]ent{{symlink("evil", "../outside")}, {file("evil/.wh..wh..opq", "")}}},
		{"hard link outside", [][]ent{{hardlink("h", "../outside/secret")}}},
		{"hard link absolute", [][]ent{{hardlink("h", "/etc/passwd")}}},
		{"hard link through symlink", [][]ent{{symlink("evil", "../outside"), hardlink("h", "evil/secret")}}},
		{"whiteout dot-dot", [][]ent{{dir("a/"), file("a/.wh...", "")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "root")
			outside := filepath.Join(parent, "outside")
			for _, d := range []string{root, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := listTree(t, parent)
			var layers [][]byte
			for _, l := range tt.layers {
				layers = append(layers, layerTar(t, l...))
			}
			_, err := applyLayers(t.Context(), root, layers...)
			if !errors.Is(err, ErrUnsafeLayer) {
				t.Fatalf("err = %v, want ErrUnsafeLayer", err)
			}
			assertOutsideUntouched(t, parent, root, before)
		})
	}
}

// assertOutsideUntouched checks that nothing outside root changed.
func assertOutsideUntouched(t testing.TB, parent, root string, before []string) {
	t.Helper()
	var b, a []string
	for _, p := range before {
		if p != "root" && !isUnder(p, "root") {
			b = append(b, p)
		}
	}
	for _, p := range listTree(t, parent) {
		if p != "root" && !isUnder(p, "root") {
			a = append(a, p)
		}
	}
	if len(a) != len(b) {
		t.Fatalf("outside root changed: before %v after %v", b, a)
	}
	if s, err := os.ReadFile(filepath.Join(parent, "outside", "secret")); err == nil && string(s) != "s" {
		t.Fatalf("outside/secret modified: %q", s)
	}
}

func isUnder(p, dir string) bool {
	r, err := filepath.Rel(dir, p)
	return err == nil && r != ".." && !filepath.IsAbs(r) && !(len(r) >= 3 && r[:3] == "../")
}

// imageFromLayers builds an image of hand-built uncompressed layers.
func imageFromLayers(t *testing.T, layers ...[]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, b := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func TestUnpack(t *testing.T) {
	tr := newTestRegistry(t)
	tr.push(t, "good:1", imageFromLayers(t,
		layerTar(t, dir("etc/"), file("etc/os-release", "ID=test"), file("etc/gone", "x")),
		layerTar(t, whiteout("etc", "gone"), symlink("bin", "usr/bin")),
	))
	tr.push(t, "evil:1", imageFromLayers(t,
		layerTar(t, dir("etc/"), file("etc/ok", "x")),
		layerTar(t, symlink("evil", "/tmp"), file("evil/pwned", "x")),
	))
	s := openStore(t, t.TempDir(), tr.registry())

	t.Run("good", func(t *testing.T) {
		img, err := s.Pull(t.Context(), "good:1", nil)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "rootfs")
		es, err := Unpack(t.Context(), img, dst)
		if err != nil {
			t.Fatal(err)
		}
		if readFile(t, filepath.Join(dst, "etc/os-release")) != "ID=test" {
			t.Fatal("content")
		}
		assertMissing(t, filepath.Join(dst, "etc/gone"))
		if len(es) != 3 {
			t.Fatalf("entries %+v", es)
		}
		if _, err := Unpack(t.Context(), img, dst); err == nil {
			t.Fatal("unpack over an existing dst succeeded")
		}
	})
	t.Run("unsafe", func(t *testing.T) {
		img, err := s.Pull(t.Context(), "evil:1", nil)
		if err != nil {
			t.Fatal(err)
		}
		parent := t.TempDir()
		_, err = Unpack(t.Context(), img, filepath.Join(parent, "rootfs"))
		if !errors.Is(err, ErrUnsafeLayer) || !strings.Contains(err.Error(), "evil:1") {
			t.Fatalf("err = %v", err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("left behind: %v", ents)
		}
		assertMissing(t, "/tmp/pwned")
	})
	t.Run("corrupt blob in store", func(t *testing.T) {
		img, err := s.Pull(t.Context(), "good:1", nil)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := blobPath(img.blobs, img.Layers[0].Digest)
		b, _ := os.ReadFile(p)
		b[len(b)-1] ^= 0xff
		os.WriteFile(p, b, 0o644)
		parent := t.TempDir()
		if _, err := Unpack(t.Context(), img, filepath.Join(parent, "rootfs")); !errors.Is(err, ErrImageCorrupt) {
			t.Fatalf("err = %v", err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("left behind: %v", ents)
		}
	})
}

func FuzzUnpack(f *testing.F) {
	seeds := [][]ent{
		{dir("a/"), file("a/b", "x"), hardlink("c", "a/b"), symlink("d", "a")},
		{symlink("evil", "../outside"), file("evil/pwned", "x")},
		{file("../escape", "x")},
		{dir("d/"), file("d/.wh..wh..opq", ""), whiteout("", "d")},
		{{name: "p", typ: tar.TypeFifo, mode: 0o644}, {name: "c", typ: tar.TypeChar, mode: 0o644}},
	}
	for _, s := range seeds {
		f.Add(layerTar(f, s...))
	}
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		outside := filepath.Join(parent, "outside")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := listTree(t, parent)
		// Twice, so the second pass meets what the first one created.
		_, _ = applyLayers(t.Context(), root, data, data)
		assertOutsideUntouched(t, parent, root, before)
		makeRemovable(root)
	})
}
