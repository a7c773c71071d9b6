package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// hostKernel is the Debian cloud kernel CI installs (the one Locate
// picks), or a path that does not exist.
var hostKernel = func() string {
	k, err := Locate("")
	if err != nil {
		return "/boot/vmlinuz-none-cloud-amd64"
	}
	return k.Path
}()

func TestExtractVmlinux(t *testing.T) {
	elf := makeELF(elfOptions{})
	big := makeELF(elfOptions{pad: lz4LegacyBlockSize + 12345}) // two lz4 blocks
	bz2, err := os.ReadFile("testdata/pvh-elf.bz2")
	if err != nil {
		t.Fatal(err)
	}
	bomb, err := os.ReadFile("testdata/bomb.bz2") // 64 MiB of zeros
	if err != nil {
		t.Fatal(err)
	}

	badTrailer := lz4Kernel(elf)
	binary.LittleEndian.PutUint32(badTrailer[len(badTrailer)-4:], uint32(len(elf)+1))
	oldProto := makeBzImage(lz4Kernel(elf), 27)
	binary.LittleEndian.PutUint16(oldProto[offVersion:], 0x206)
	outOfBounds := makeBzImage(lz4Kernel(elf), 27)
	binary.LittleEndian.PutUint32(outOfBounds[offPayloadLength:], 1<<30)
	twoFrames := append(lz4Blocks(elf[:100]), lz4Blocks(elf[100:])...)
	twoFrames = binary.LittleEndian.AppendUint32(twoFrames, uint32(len(elf)))

	tests := []struct {
		name    string
		in      []byte
		want    []byte // nil: want an error
		wantErr string // substring of the error
	}{
		{name: "lz4 legacy with size trailer", in: makeBzImage(lz4Kernel(elf), 27), want: elf},
		{name: "lz4 legacy two blocks", in: makeBzImage(lz4Kernel(big), 27), want: big},
		{name: "lz4 legacy two frames", in: makeBzImage(twoFrames, 27), want: elf},
		{name: "lz4 legacy without trailer", in: makeBzImage(lz4Writer(t, elf), 27), want: elf},
		{name: "setup_sects 0 means 4", in: makeBzImage(lz4Kernel(elf), 0), want: elf},
		{name: "gzip", in: makeBzImage(gzipBytes(elf), 30), want: elf},
		{name: "bzip2", in: makeBzImage(bz2, 30), want: elf},
		{name: "uncompressed payload", in: makeBzImage(elf, 30), want: elf},
		{name: "already a vmlinux", in: elf, want: elf},
		{name: "empty", in: nil, wantErr: `no "HdrS"`},
		{name: "not a bzImage", in: bytes.Repeat([]byte{0x55}, 4096), wantErr: `no "HdrS"`},
		{name: "boot protocol too old", in: oldProto, wantErr: "older than 2.08"},
		{name: "payload out of bounds", in: outOfBounds, wantErr: "outside the"},
		{name: "zstd", in: makeBzImage([]byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4}, 27), wantErr: "zstd compression is not supported"},
		{name: "xz", in: makeBzImage([]byte("\xfd7zXZ\x00abc"), 27), wantErr: "xz compression is not supported"},
		{name: "unknown compression", in: makeBzImage([]byte("garbage!"), 27), wantErr: "unknown compression"},
		{name: "lz4 size trailer mismatch", in: makeBzImage(badTrailer, 27), wantErr: "size trailer says"},
		{name: "lz4 truncated", in: makeBzImage(lz4Kernel(elf)[:40], 27), wantErr: "bad block size"},
		{name: "lz4 corrupt block", in: makeBzImage(append(lz4Blocks(elf)[:8], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 27), wantErr: "lz4"},
		{name: "bzip2 bomb", in: makeBzImage(bomb, 27), wantErr: "bzip2: decompresses to more than"},
		{name: "gzip bomb", in: makeBzImage(gzipBytes(make([]byte, 16<<20)), 27), wantErr: "gzip: decompresses to more than"},
		{name: "lz4 bomb", in: makeBzImage(lz4Kernel(make([]byte, 16<<20)), 27), wantErr: "decompresses to more than"},
		{name: "gzip truncated", in: makeBzImage(gzipBytes(elf)[:30], 27), wantErr: "gzip"},
		{name: "no PVH note", in: makeBzImage(lz4Kernel(makeELF(elfOptions{noPVH: true})), 27), wantErr: "no PVH entry note"},
		{name: "not x86-64", in: makeBzImage(lz4Kernel(makeELF(elfOptions{machine: 183})), 27), wantErr: "want x86-64"},
		{name: "payload not ELF", in: makeBzImage(lz4Kernel([]byte("hello, world")), 27), wantErr: "not an ELF image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExtractVmlinux(tt.in)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ExtractVmlinux succeeded, want error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tt.wantErr)
				}
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("error %q does not wrap ErrInvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ExtractVmlinux: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got %d bytes, want %d bytes", len(got), len(tt.want))
			}
		})
	}
}

// TestExtractVmlinuxHostKernel extracts the real Debian cloud kernel.
func TestExtractVmlinuxHostKernel(t *testing.T) {
	img, err := os.ReadFile(hostKernel)
	if errors.Is(err, os.ErrNotExist) {
		skipOrFail(t, fmt.Sprintf("%s absent (install it with %q)", hostKernel, InstallHint))
	}
	if err != nil {
		t.Fatal(err)
	}
	vmlinux, err := ExtractVmlinux(img)
	if err != nil {
		t.Fatalf("ExtractVmlinux(%s): %v", hostKernel, err)
	}
	payload, err := bzImagePayload(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := binary.LittleEndian.Uint32(payload[len(payload)-4:]); uint32(len(vmlinux)) != want {
		t.Errorf("vmlinux is %d bytes, the size trailer says %d", len(vmlinux), want)
	}
}

func FuzzExtractVmlinux(f *testing.F) {
	elf := makeELF(elfOptions{})
	f.Add(elf)
	f.Add(makeBzImage(lz4Kernel(elf), 1))
	f.Add(makeBzImage(lz4Kernel(elf), 0))
	f.Add(makeBzImage(gzipBytes(elf), 1))
	f.Add(makeBzImage(elf, 1))
	f.Add(makeBzImage(lz4Kernel(makeELF(elfOptions{noPVH: true})), 1))
	f.Add(makeBzImage(lz4Kernel(elf)[:50], 1))
	if bz2, err := os.ReadFile("testdata/pvh-elf.bz2"); err == nil {
		f.Add(makeBzImage(bz2, 1))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := ExtractVmlinux(in)
		if err == nil && checkPVH(out) != nil {
			t.Fatalf("ExtractVmlinux returned an image without a PVH note")
		}
	})
}

// skipOrFail skips a test that needs the host kernel, except under CI,
// which installs it.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}
