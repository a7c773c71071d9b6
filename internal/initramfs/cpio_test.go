package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// entry is one parsed cpio member.
type entry struct {
	ino, mode, uid, gid, nlink, mtime uint32
	rmajor, rminor                    uint32
	name                              string
	data                              []byte
}

// readCPIO parses a newc archive strictly: magic, 4-byte alignment of
// every header and of every data block, a trailer, and zero padding to a
// multiple of 512 bytes after it.
func readCPIO(b []byte) ([]entry, error) {
	var out []entry
	off := 0
	for {
		if off%4 != 0 {
			return nil, fmt.Errorf("header at %d not 4-byte aligned", off)
		}
		if len(b)-off < headerSize {
			return nil, fmt.Errorf("truncated header at %d", off)
		}
		h := b[off : off+headerSize]
		if string(h[:6]) != newcMagic {
			return nil, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("field %d at %d: %w", i, off, err)
			}
			f[i] = uint32(v)
		}
		namesize, filesize := int(f[11]), int(f[6])
		nameEnd := off + headerSize + namesize
		if namesize == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("bad name at %d", off)
		}
		name := string(b[off+headerSize : nameEnd-1])
		for _, p := range b[nameEnd:align4(nameEnd)] {
			if p != 0 {
				return nil, fmt.Errorf("nonzero name padding after %q", name)
			}
		}
		dataStart := align4(nameEnd)
		if dataStart+filesize > len(b) {
			return nil, fmt.Errorf("truncated data of %q", name)
		}
		if f[12] != 0 || f[7] != 0 || f[8] != 0 {
			return nil, fmt.Errorf("%q: nonzero check or dev fields", name)
		}
		off = align4(dataStart + filesize)
		if name == trailerName {
			if off > len(b) || len(b)%blockSize != 0 {
				return nil, fmt.Errorf("archive of %d bytes not padded to %d", len(b), blockSize)
			}
			if bytes.ContainsFunc(b[dataStart:], func(r rune) bool { return r != 0 }) {
				return nil, errors.New("nonzero bytes after the trailer")
			}
			return out, nil
		}
		out = append(out, entry{
			ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5],
			rmajor: f[9], rminor: f[10],
			name: name, data: b[dataStart : dataStart+filesize],
		})
	}
}

func TestWriterGolden(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must(t, w.Dir("/a", 0o755))
	must(t, w.File("a/bc", 0o644, []byte("xyz")))
	must(t, w.Symlink("a/l", "bc"))
	must(t, w.Close())

	hdr := func(ino, mode, nlink, size, namesize int) string {
		return fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0)
	}
	want := hdr(1, 0o40755, 2, 0, 2) + "a\x00" + // 110+2 = 112, aligned
		hdr(2, 0o100644, 1, 3, 5) + "a/bc\x00" + "\x00" + // 115 -> 116
		"xyz\x00" + // 3 -> 4
		hdr(3, 0o120777, 1, 2, 4) + "a/l\x00" + "\x00\x00" + // 114 -> 116
		"bc\x00\x00" + // 2 -> 4
		hdr(0, 0, 1, 0, 11) + "TRAILER!!!\x00" + "\x00" // 121 -> 124
	want += strings.Repeat("\x00", 512-len(want))
	if got := buf.String(); got != want {
		t.Fatalf("archive differs from golden:\n got %q\nwant %q", got, want)
	}
}

func TestWriterRoundTrip(t *testing.T) {
	odd := bytes.Repeat([]byte{0xab}, 4097)
	type op func(*Writer) error
	tests := []struct {
		name    string
		ops     []op
		want    []entry // ino, mode, nlink, name, data, rdev
		wantErr string
	}{
		{
			name: "every entry type and name length mod 4",
			ops: []op{
				func(w *Writer) error { return w.Dir("d", 0o755) },
				func(w *Writer) error { return w.Dir("/d/ee/", 0o700) },
				func(w *Writer) error { return w.Dir("d/fff", 0o777|os.ModeSticky) },
				func(w *Writer) error { return w.Dir("d/gggg", 0o755|os.ModeSetgid) },
				func(w *Writer) error { return w.File("d/empty", 0o600, nil) },
				func(w *Writer) error { return w.File("d/odd", 0o4755|os.ModeSetuid, odd) },
				func(w *Writer) error { return w.Symlink("d/link", "/d/odd") },
				func(w *Writer) error { return w.CharDevice("d/console", 0o600, 5, 1) },
			},
			want: []entry{
				{ino: 1, mode: 0o40755, nlink: 2, name: "d"},
				{ino: 2, mode: 0o40700, nlink: 2, name: "d/ee"},
				{ino: 3, mode: 0o41777, nlink: 2, name: "d/fff"},
				{ino: 4, mode: 0o42755, nlink: 2, name: "d/gggg"},
				{ino: 5, mode: 0o100600, nlink: 1, name: "d/empty"},
				{ino: 6, mode: 0o104755, nlink: 1, name: "d/odd", data: odd},
				{ino: 7, mode: 0o120777, nlink: 1, name: "d/link", data: []byte("/d/odd")},
				{ino: 8, mode: 0o20600, nlink: 1, name: "d/console", rmajor: 5, rminor: 1},
			},
		},
		{name: "empty archive"},
		{
			name:    "duplicate name",
			ops:     []op{func(w *Writer) error { return w.Dir("x", 0o755) }, func(w *Writer) error { return w.File("/x", 0o644, nil) }},
			wantErr: "duplicate entry",
		},
		{
			name:    "empty name",
			ops:     []op{func(w *Writer) error { return w.Dir("/", 0o755) }},
			wantErr: "empty name",
		},
		{
			name:    "trailer name",
			ops:     []op{func(w *Writer) error { return w.File("TRAILER!!!", 0o644, nil) }},
			wantErr: "reserved name",
		},
		{
			name:    "symlink without target",
			ops:     []op{func(w *Writer) error { return w.Symlink("l", "") }},
			wantErr: "empty target",
		},
		{
			name:    "write after close",
			ops:     []op{func(w *Writer) error { w.Close(); return w.Dir("x", 0o755) }},
			wantErr: "after Close",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			var err error
			for _, o := range tt.ops {
				if err = o(w); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			must(t, w.Close())
			got, err := readCPIO(buf.Bytes())
			if err != nil {
				t.Fatalf("readCPIO: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d entries, want %d", len(got), len(tt.want))
			}
			for i, g := range got {
				want := tt.want[i]
				if g.ino != want.ino || g.mode != want.mode || g.nlink != want.nlink || g.name != want.name ||
					!bytes.Equal(g.data, want.data) || g.rmajor != want.rmajor || g.rminor != want.rminor ||
					g.uid != 0 || g.gid != 0 || g.mtime != 0 {
					t.Errorf("entry %d = %+v, want %+v", i, g, want)
				}
			}
		})
	}
}

// TestWriterCPIOTool lists an archive with GNU cpio, when installed.
func TestWriterCPIOTool(t *testing.T) {
	bin, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio(1) not installed; the stdlib round-trip test covers the format")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must(t, w.Dir("dir", 0o755))
	must(t, w.File("dir/file", 0o644, []byte("hello")))
	must(t, w.Symlink("dir/link", "file"))
	must(t, w.Close())
	cmd := exec.Command(bin, "-t", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	if got, want := string(out), "dir\ndir/file\ndir/link\n"; got != want {
		t.Fatalf("cpio -t listed %q, want %q", got, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
