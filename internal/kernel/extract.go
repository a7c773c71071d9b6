package kernel

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pierrec/lz4/v4"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// maxVmlinuxSize and maxRatio bound the decompressed kernel, so that a
// corrupt or hostile image (bzip2 alone expands a few hundred bytes to
// gigabytes) cannot make ExtractVmlinux allocate and work without limit.
// A distribution vmlinux is 30-70 MiB and compresses 3-5 times with
// every format the kernel supports.
const (
	maxVmlinuxSize = 512 << 20
	maxRatio       = 64
)

// x86 boot protocol (Documentation/arch/x86/boot.rst): offsets into the
// setup header at the start of a bzImage.
const (
	offSetupSects    = 0x1f1 // u8: 512-byte setup sectors after the boot sector; 0 means 4
	offHeaderMagic   = 0x202 // "HdrS"
	offVersion       = 0x206 // u16: boot protocol version
	offPayloadOffset = 0x248 // u32: payload offset from the protected-mode code
	offPayloadLength = 0x24c // u32: payload length
	setupHeaderEnd   = 0x250
	minPayloadProto  = 0x208 // payload_offset/payload_length exist since 2.08
)

// LZ4 legacy frame, as written by "lz4 -l" (the kernel's Makefile.lib).
const (
	lz4LegacyMagic      = 0x184C2102
	lz4LegacyBlockSize  = 8 << 20
	lz4LegacyBlockBound = lz4LegacyBlockSize + lz4LegacyBlockSize/255 + 16
)

// ELF constants for the PVH check.
const (
	elfClass64          = 2
	elfDataLSB          = 1
	elfMachineX86_64    = 62
	ptNote              = 4
	xenElfnotePhys32Ent = 18 // XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point
)

// ExtractVmlinux returns the uncompressed ELF kernel inside a bzImage. It
// parses the x86 boot protocol setup header, decompresses the payload
// (LZ4 legacy frames, gzip or bzip2; zstd, xz, lzma and lzo are detected
// and reported as unsupported) and checks that the result is an x86-64
// ELF image with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), which QEMU
// needs to boot it with -kernel. An input that already is such an ELF
// image is returned unchanged. The output is bounded (512 MiB, and 64
// times the payload) against decompression bombs. Errors wrap
// [errdefs.ErrInvalidArgument].
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	var vmlinux []byte
	if bytes.HasPrefix(bzImage, []byte("\x7fELF")) {
		vmlinux = bzImage
	} else {
		payload, err := bzImagePayload(bzImage)
		if err != nil {
			return nil, fmt.Errorf("kernel image: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		limit := min(maxVmlinuxSize, maxRatio*len(payload))
		vmlinux, err = decompress(payload, limit)
		if err != nil {
			return nil, fmt.Errorf("kernel image: payload: %w: %w", errdefs.ErrInvalidArgument, err)
		}
	}
	if err := checkPVH(vmlinux); err != nil {
		return nil, fmt.Errorf("kernel image: vmlinux: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	return vmlinux, nil
}

// bzImagePayload returns the compressed kernel of a bzImage.
func bzImagePayload(img []byte) ([]byte, error) {
	if len(img) < setupHeaderEnd || string(img[offHeaderMagic:offHeaderMagic+4]) != "HdrS" {
		return nil, errors.New(`not a bzImage: no "HdrS" boot protocol header at 0x202`)
	}
	if v := binary.LittleEndian.Uint16(img[offVersion:]); v < minPayloadProto {
		return nil, fmt.Errorf("boot protocol %d.%02d is older than 2.08: no payload fields", v>>8, v&0xff)
	}
	setupSects := int(img[offSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	start := uint64(setupSects+1) * 512
	off := start + uint64(binary.LittleEndian.Uint32(img[offPayloadOffset:]))
	n := uint64(binary.LittleEndian.Uint32(img[offPayloadLength:]))
	if n == 0 || off+n > uint64(len(img)) {
		return nil, fmt.Errorf("payload [%d, %d) outside the %d-byte image", off, off+n, len(img))
	}
	return img[off : off+n], nil
}

// decompress detects the payload format by its magic number and
// decompresses it to at most limit bytes.
func decompress(p []byte, limit int) ([]byte, error) {
	switch {
	case len(p) >= 4 && binary.LittleEndian.Uint32(p) == lz4LegacyMagic:
		return lz4Legacy(p, limit)
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		zr.Multistream(false) // the kernel appends nothing to gzip, but ignore any padding
		return readLimited("gzip", zr, limit)
	case bytes.HasPrefix(p, []byte("BZh")):
		return readLimited("bzip2", bzip2.NewReader(bytes.NewReader(p)), limit)
	case bytes.HasPrefix(p, []byte("\x7fELF")):
		return p, nil // CONFIG_KERNEL_UNCOMPRESSED
	}
	unsupported := []struct {
		name  string
		magic []byte
	}{
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0}},
		{"lzo", []byte{0x89, 'L', 'Z', 'O'}},
		{"lzma", []byte{0x5d, 0, 0}},
		{"lz4 (modern frame)", []byte{0x04, 0x22, 0x4d, 0x18}},
	}
	for _, u := range unsupported {
		if bytes.HasPrefix(p, u.magic) {
			return nil, fmt.Errorf("%s compression is not supported (supported: lz4 legacy, gzip, bzip2)", u.name)
		}
	}
	head := p[:min(len(p), 8)]
	return nil, fmt.Errorf("unknown compression (first bytes % x)", head)
}

// readLimited reads r to its end, failing beyond limit bytes.
func readLimited(format string, r io.Reader, limit int) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", format, err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%s: decompresses to more than %d bytes", format, limit)
	}
	return out, nil
}

// lz4Legacy decodes LZ4 legacy frames: a magic number, then blocks of a
// 4-byte little-endian compressed size and at most 8 MiB of data once
// decompressed. A further magic number starts another frame. The kernel
// build appends the uncompressed size as 4 more bytes ("size_append");
// when present it must match. The output is at most limit bytes.
func lz4Legacy(p []byte, limit int) ([]byte, error) {
	p = p[4:]
	var out []byte
	// The trailer, if it is one, sizes the output; a block may need 8 MiB
	// of room beyond the last byte it writes.
	if len(p) >= 4 {
		if hint := binary.LittleEndian.Uint32(p[len(p)-4:]); uint64(hint) <= uint64(limit) {
			out = make([]byte, 0, min(int(hint)+lz4LegacyBlockSize, limit))
		}
	}
	for len(p) > 0 {
		if len(p) < 4 {
			return nil, fmt.Errorf("lz4: truncated block header (%d stray bytes)", len(p))
		}
		n := binary.LittleEndian.Uint32(p)
		if len(p) == 4 {
			// Nothing follows, so this is the size trailer, not a block.
			if int64(n) != int64(len(out)) {
				return nil, fmt.Errorf("lz4: decompressed %d bytes, size trailer says %d", len(out), n)
			}
			break
		}
		p = p[4:]
		if n == lz4LegacyMagic {
			continue
		}
		if n == 0 || n > lz4LegacyBlockBound || uint64(n) > uint64(len(p)) {
			return nil, fmt.Errorf("lz4: bad block size %d with %d bytes left", n, len(p))
		}
		room := min(lz4LegacyBlockSize, limit-len(out))
		if room <= 0 {
			return nil, fmt.Errorf("lz4: decompresses to more than %d bytes", limit)
		}
		if cap(out)-len(out) < room {
			grown := make([]byte, len(out), len(out)+max(room, min(len(out), limit-len(out))))
			copy(grown, out)
			out = grown
		}
		m, err := lz4.UncompressBlock(p[:n], out[len(out):len(out)+room])
		if err != nil {
			if room < lz4LegacyBlockSize {
				return nil, fmt.Errorf("lz4: block at %d: corrupt or decompresses to more than %d bytes: %w", len(out), limit, err)
			}
			return nil, fmt.Errorf("lz4: block at %d: %w", len(out), err)
		}
		out = out[:len(out)+m]
		p = p[n:]
	}
	return out, nil
}

// checkPVH verifies that b is a little-endian ELF64 x86-64 image with a
// PT_NOTE segment holding a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY.
func checkPVH(b []byte) error {
	if len(b) < 64 || !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return errors.New("not an ELF image")
	}
	if b[4] != elfClass64 || b[5] != elfDataLSB {
		return errors.New("not a little-endian ELF64 image")
	}
	if m := binary.LittleEndian.Uint16(b[0x12:]); m != elfMachineX86_64 {
		return fmt.Errorf("ELF machine %d, want x86-64 (%d)", m, elfMachineX86_64)
	}
	phoff := binary.LittleEndian.Uint64(b[0x20:])
	phentsize := uint64(binary.LittleEndian.Uint16(b[0x36:]))
	phnum := uint64(binary.LittleEndian.Uint16(b[0x38:]))
	size := uint64(len(b))
	if phentsize < 56 || phoff > size || phnum*phentsize > size-phoff {
		return errors.New("ELF program headers out of bounds")
	}
	for i := range phnum {
		ph := b[phoff+i*phentsize:]
		if binary.LittleEndian.Uint32(ph) != ptNote {
			continue
		}
		off := binary.LittleEndian.Uint64(ph[8:])
		n := binary.LittleEndian.Uint64(ph[32:])
		if off > size || n > size-off {
			return errors.New("ELF note segment out of bounds")
		}
		if hasPVHNote(b[off : off+n]) {
			return nil
		}
	}
	return errors.New("no PVH entry note (Xen note XEN_ELFNOTE_PHYS32_ENTRY): the kernel lacks CONFIG_PVH=y and QEMU cannot boot it as a vmlinux")
}

// hasPVHNote scans the notes of one PT_NOTE segment.
func hasPVHNote(notes []byte) bool {
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(notes) >= 12 {
		namesz := uint64(binary.LittleEndian.Uint32(notes))
		descsz := uint64(binary.LittleEndian.Uint32(notes[4:]))
		typ := binary.LittleEndian.Uint32(notes[8:])
		rest := uint64(len(notes) - 12)
		if align4(namesz) > rest || align4(descsz) > rest-align4(namesz) {
			return false
		}
		name := notes[12 : 12+namesz]
		if typ == xenElfnotePhys32Ent && string(bytes.TrimRight(name, "\x00")) == "Xen" && descsz >= 4 {
			return true
		}
		notes = notes[12+align4(namesz)+align4(descsz):]
	}
	return false
}
