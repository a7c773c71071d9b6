package kernel

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// elfOptions shapes the synthetic vmlinux built by makeELF.
type elfOptions struct {
	machine uint16 // default x86-64
	noPVH   bool   // write a note of another type instead of the PVH entry
	pad     int    // incompressible bytes appended, to make multi-block payloads
}

// makeELF builds a minimal ELF64 image: a header, one PT_NOTE program
// header and one note ("Xen", XEN_ELFNOTE_PHYS32_ENTRY unless noPVH).
func makeELF(o elfOptions) []byte {
	if o.machine == 0 {
		o.machine = elfMachineX86_64
	}
	b := make([]byte, 64+56+20+o.pad)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = elfClass64, elfDataLSB, 1
	le := binary.LittleEndian
	le.PutUint16(b[0x10:], 2) // ET_EXEC
	le.PutUint16(b[0x12:], o.machine)
	le.PutUint64(b[0x20:], 64) // e_phoff
	le.PutUint16(b[0x34:], 64) // e_ehsize
	le.PutUint16(b[0x36:], 56) // e_phentsize
	le.PutUint16(b[0x38:], 1)  // e_phnum
	ph := b[64:]
	le.PutUint32(ph, ptNote)
	le.PutUint64(ph[8:], 120) // p_offset
	le.PutUint64(ph[32:], 20) // p_filesz
	note := b[120:]
	le.PutUint32(note, 4) // namesz
	le.PutUint32(note[4:], 4)
	typ := uint32(xenElfnotePhys32Ent)
	if o.noPVH {
		typ = 17
	}
	le.PutUint32(note[8:], typ)
	copy(note[12:], "Xen\x00")
	le.PutUint32(note[16:], 0x1000000) // entry point
	rnd := rand.NewChaCha8([32]byte{})
	rnd.Read(b[140:])
	return b
}

// makeBzImage wraps payload in a bzImage setup header the way the kernel
// build lays it out.
func makeBzImage(payload []byte, setupSects byte) []byte {
	sects := int(setupSects)
	if sects == 0 {
		sects = 4
	}
	const payloadOffset = 100
	start := (sects + 1) * 512
	b := make([]byte, start+payloadOffset+len(payload)+64)
	b[offSetupSects] = setupSects
	copy(b[offHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(b[offVersion:], 0x20f)
	binary.LittleEndian.PutUint32(b[offPayloadOffset:], payloadOffset)
	binary.LittleEndian.PutUint32(b[offPayloadLength:], uint32(len(payload)))
	copy(b[start+payloadOffset:], payload)
	return b
}

// lz4Blocks compresses data as "lz4 -l" does: a legacy frame magic and
// blocks of at most 8 MiB, each behind its 4-byte compressed size.
func lz4Blocks(data []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, lz4LegacyMagic)
	for len(data) > 0 {
		n := min(len(data), lz4LegacyBlockSize)
		buf := make([]byte, lz4.CompressBlockBound(n))
		c, err := lz4.CompressBlock(data[:n], buf, nil)
		if err != nil || c == 0 {
			panic("lz4 test compression failed")
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(c))
		out = append(out, buf[:c]...)
		data = data[n:]
	}
	return out
}

func gzipBytes(data []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

// lz4Kernel compresses data as the kernel build does: lz4Blocks, then
// the uncompressed size as a 4-byte trailer (Makefile.lib's size_append).
func lz4Kernel(data []byte) []byte {
	return binary.LittleEndian.AppendUint32(lz4Blocks(data), uint32(len(data)))
}

// lz4Writer compresses data with pierrec/lz4's legacy writer (no trailer).
func lz4Writer(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := lz4.NewWriter(&buf)
	if err := zw.Apply(lz4.LegacyOption(true)); err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
