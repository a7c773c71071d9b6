package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// Read verifies the archive at path and extracts its members into dst, an
// existing empty directory, as files named after the members. It returns the
// manifest, each member's SHA256 filled in from checksums.json, once every
// check of the format (see the package documentation) has passed and every
// member is written and synced.
//
// Before it writes anything, Read checks the manifest: format version,
// member names, sizes against limits and against the free space of dst's
// file system. It then streams each member to dst, checking its tar header
// and size and hashing it, then checks checksums.json against those hashes,
// and finally the end of the archive. On any error it removes the files it
// created, leaving dst empty: the sha256s are only known to match once the
// whole archive is read. A bad archive yields a
// *FormatError (errors.Is ErrBadArchive and errdefs.ErrInvalidArgument);
// other errors (I/O, a full disk, ctx) are returned wrapped as they are.
func Read(ctx context.Context, path string, dst string, limits Limits) (_ Manifest, err error) {
	limits, err = limits.resolve()
	if err != nil {
		return Manifest{}, err
	}
	if err := checkEmptyDir(dst); err != nil {
		return Manifest{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Manifest{}, fmt.Errorf("archive: %w: %w", err, errdefs.ErrNotFound)
		}
		return Manifest{}, fmt.Errorf("archive: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return Manifest{}, fmt.Errorf("archive: %w", err)
	} else if !fi.Mode().IsRegular() {
		return Manifest{}, fmt.Errorf("archive %s: not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}

	x := &extractor{ctx: ctx, path: path, dst: dst, limits: limits, src: &sourceReader{r: f}}
	m, err := x.run()
	if err != nil {
		for _, p := range x.created {
			os.Remove(p)
		}
		return Manifest{}, err
	}
	return m, nil
}

func checkEmptyDir(dst string) error {
	d, err := os.Open(dst)
	if err != nil {
		return fmt.Errorf("archive: destination: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("archive: destination %s: %w", dst, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("archive: destination %s is not empty: %w", dst, errdefs.ErrInvalidArgument)
	}
	return nil
}

// sourceReader remembers the archive file's read error, so that an I/O
// error is not mistaken for a damaged archive.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// countingReader counts the decompressed bytes and checks ctx.
type countingReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type extractor struct {
	ctx     context.Context
	path    string
	dst     string
	limits  Limits
	src     *sourceReader
	tar     *tar.Reader
	count   *countingReader
	created []string
}

func (x *extractor) bad(format string, args ...any) error {
	return &FormatError{Path: x.path, Reason: fmt.Sprintf(format, args...)}
}

// readErr classifies an error met while decoding: the context's or the
// archive file's own error as such, anything else as a bad archive.
func (x *extractor) readErr(what string, err error) error {
	if cerr := x.ctx.Err(); cerr != nil {
		return fmt.Errorf("archive %s: %w", x.path, cerr)
	}
	if x.src.err != nil {
		return fmt.Errorf("archive %s: %w", x.path, x.src.err)
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return &FormatError{Path: x.path, Reason: what + ": truncated"}
	case errors.Is(err, tar.ErrHeader):
		return &FormatError{Path: x.path, Reason: what + ": invalid tar header"}
	}
	return &FormatError{Path: x.path, Reason: what + ": corrupt data", Err: err}
}

func (x *extractor) run() (Manifest, error) {
	magic := make([]byte, len(zstdMagic))
	if n, err := io.ReadFull(x.src, magic); err != nil {
		if x.src.err != nil {
			return Manifest{}, fmt.Errorf("archive %s: %w", x.path, x.src.err)
		}
		if n == 0 {
			return Manifest{}, x.bad("not a boxlite archive: empty file")
		}
		return Manifest{}, x.bad("not a boxlite archive: not zstd-compressed")
	}
	if !bytes.Equal(magic, zstdMagic) {
		return Manifest{}, x.bad("not a boxlite archive: not zstd-compressed")
	}
	zr, err := zstd.NewReader(io.MultiReader(bytes.NewReader(magic), x.src),
		zstd.WithDecoderMaxWindow(maxWindow),
		zstd.WithDecoderConcurrency(2))
	if err != nil {
		return Manifest{}, fmt.Errorf("archive: zstd: %w", err)
	}
	defer zr.Close()
	x.count = &countingReader{ctx: x.ctx, r: zr}
	x.tar = tar.NewReader(x.count)

	m, err := x.readManifest()
	if err != nil {
		return Manifest{}, err
	}
	if err := x.checkSpace(m); err != nil {
		return Manifest{}, err
	}
	buf := make([]byte, copyBuf)
	seen := make(map[string]bool, len(m.Members))
	sums := make([]string, len(m.Members))
	for i, mem := range m.Members {
		hdr, err := x.next(m, seen)
		if err == io.EOF {
			return Manifest{}, x.bad("member %q missing", mem.Name)
		}
		if err != nil {
			return Manifest{}, err
		}
		if hdr.Name == ChecksumsName {
			return Manifest{}, x.bad("member %q missing: %s comes before it", mem.Name, ChecksumsName)
		}
		if hdr.Name != mem.Name {
			return Manifest{}, x.bad("member %q out of order: expected %q", hdr.Name, mem.Name)
		}
		seen[mem.Name] = true
		if hdr.Size != mem.Size {
			return Manifest{}, x.bad("member %q: tar header says %d bytes, manifest says %d", mem.Name, hdr.Size, mem.Size)
		}
		if sums[i], err = x.extract(mem, buf); err != nil {
			return Manifest{}, err
		}
	}
	if err := x.checksums(m, seen, sums); err != nil {
		return Manifest{}, err
	}
	if err := x.end(); err != nil {
		return Manifest{}, err
	}
	for i := range m.Members {
		m.Members[i].SHA256 = sums[i]
	}
	return m, nil
}

// next reads the next tar header and checks it names a regular file with a
// valid member name listed in m and not yet seen, or is checksums.json. It
// returns io.EOF at the end of the tar stream.
func (x *extractor) next(m Manifest, seen map[string]bool) (*tar.Header, error) {
	hdr, err := x.tar.Next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, x.readErr("tar stream", err)
	}
	if hdr.Name == ChecksumsName {
		return hdr, x.checkHeader(hdr)
	}
	if !ValidName(hdr.Name) {
		return nil, x.bad("entry %q: %v", hdr.Name, errNameInvalid)
	}
	if err := x.checkHeader(hdr); err != nil {
		return nil, err
	}
	if seen[hdr.Name] {
		return nil, x.bad("duplicate member %q", hdr.Name)
	}
	if !slices.ContainsFunc(m.Members, func(mem Member) bool { return mem.Name == hdr.Name }) {
		return nil, x.bad("entry %q is not in the manifest", hdr.Name)
	}
	return hdr, nil
}

// checkHeader refuses anything but a plain regular file.
func (x *extractor) checkHeader(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeReg {
		return x.bad("entry %q: %s, want a regular file", hdr.Name, typeName(hdr.Typeflag))
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return x.bad("entry %q: sparse tar entries are not allowed", hdr.Name)
		}
	}
	if hdr.Size < 0 {
		return x.bad("entry %q: negative size", hdr.Name)
	}
	return nil
}

func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "a symbolic link"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeDir:
		return "a directory"
	case tar.TypeChar, tar.TypeBlock:
		return "a device"
	case tar.TypeFifo:
		return "a fifo"
	case tar.TypeGNUSparse:
		return "a sparse file"
	}
	return fmt.Sprintf("tar type %q", t)
}

func (x *extractor) readManifest() (Manifest, error) {
	hdr, err := x.tar.Next()
	if err == io.EOF {
		return Manifest{}, x.bad("not a boxlite archive: empty tar stream")
	}
	if err != nil {
		if errors.Is(err, tar.ErrHeader) {
			return Manifest{}, x.bad("not a boxlite archive: %v", err)
		}
		return Manifest{}, x.readErr("manifest", err)
	}
	if hdr.Name != ManifestName {
		return Manifest{}, x.bad("not a boxlite archive: first entry is %q, want %s", hdr.Name, ManifestName)
	}
	if err := x.checkHeader(hdr); err != nil {
		return Manifest{}, err
	}
	if hdr.Size > MaxManifestSize {
		return Manifest{}, x.bad("%s: %d bytes, over the limit of %d", ManifestName, hdr.Size, MaxManifestSize)
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(x.tar, data); err != nil {
		return Manifest{}, x.readErr(ManifestName, err)
	}
	return x.parseManifest(data)
}

func (x *extractor) parseManifest(data []byte) (Manifest, error) {
	var version struct {
		FormatVersion *int `json:"format_version"`
	}
	if err := json.Unmarshal(data, &version); err != nil {
		return Manifest{}, x.bad("%s: %v", ManifestName, err)
	}
	if version.FormatVersion == nil {
		return Manifest{}, x.bad("%s: no format_version", ManifestName)
	}
	if v := *version.FormatVersion; v != FormatVersion {
		if v == 1 {
			return Manifest{}, x.bad("format version 1 not supported (this build reads version %d)", FormatVersion)
		}
		return Manifest{}, x.bad("unsupported format version %d (this build reads version %d)", v, FormatVersion)
	}
	var w wireManifest
	if err := decodeStrict(data, &w); err != nil {
		return Manifest{}, x.bad("%s: %v", ManifestName, err)
	}
	switch {
	case w.CreatedAt == nil:
		return Manifest{}, x.bad("%s: no created_at", ManifestName)
	case len(w.Box) == 0:
		return Manifest{}, x.bad("%s: no box options", ManifestName)
	case w.Image == nil:
		return Manifest{}, x.bad("%s: no image", ManifestName)
	case w.Members == nil:
		return Manifest{}, x.bad("%s: no members", ManifestName)
	}
	m := Manifest{
		FormatVersion: *w.FormatVersion,
		CreatedAt:     *w.CreatedAt,
		Box:           w.Box,
		Image:         *w.Image,
		Members:       make([]Member, 0, len(*w.Members)),
	}
	names := make(map[string]bool, len(*w.Members))
	var total int64
	for _, wm := range *w.Members {
		if !ValidName(wm.Name) {
			return Manifest{}, x.bad("%s: member %q: %v", ManifestName, wm.Name, errNameInvalid)
		}
		if names[wm.Name] {
			return Manifest{}, x.bad("%s: member %q listed twice", ManifestName, wm.Name)
		}
		names[wm.Name] = true
		if wm.Size == nil {
			return Manifest{}, x.bad("%s: member %q: no size", ManifestName, wm.Name)
		}
		mem := Member{Name: wm.Name, Size: *wm.Size}
		if mem.Size < 0 {
			return Manifest{}, x.bad("%s: member %q: negative size %d", ManifestName, mem.Name, mem.Size)
		}
		if mem.Size > x.limits.MaxMemberSize {
			return Manifest{}, x.bad("member %q: %d bytes, over the limit of %d", mem.Name, mem.Size, x.limits.MaxMemberSize)
		}
		if mem.Size > x.limits.MaxTotalSize-total {
			return Manifest{}, x.bad("members total more than the limit of %d bytes", x.limits.MaxTotalSize)
		}
		total += mem.Size
		m.Members = append(m.Members, mem)
	}
	return m, nil
}

// decodeStrict decodes the single JSON value data holds into v, refusing
// unknown keys.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// checkSpace refuses an archive whose members would not fit in dst's file
// system. It is not an archive error: the archive may be fine.
func (x *extractor) checkSpace(m Manifest) error {
	var total int64
	for _, mem := range m.Members {
		total += mem.Size
	}
	free, ok := freeSpace(x.dst)
	if ok && uint64(total) > free {
		return fmt.Errorf("archive %s: members need %d bytes, %s has %d free: %w", x.path, total, x.dst, free, errdefs.ErrInvalidArgument)
	}
	return nil
}

// extract copies the current tar entry to dst/mem.Name and returns its hex
// sha256. All-zero blocks become holes.
func (x *extractor) extract(mem Member, buf []byte) (string, error) {
	p := filepath.Join(x.dst, mem.Name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", fmt.Errorf("archive: %w", err)
	}
	x.created = append(x.created, p)
	sum, err := x.copyMember(f, mem, buf)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("archive: %w", cerr)
	}
	return sum, err
}

func (x *extractor) copyMember(f *os.File, mem Member, buf []byte) (string, error) {
	h := sha256.New()
	var off int64
	for off < mem.Size {
		k, err := io.ReadFull(x.tar, buf[:min(int64(len(buf)), mem.Size-off)])
		if err != nil {
			return "", x.readErr(fmt.Sprintf("member %q", mem.Name), err)
		}
		h.Write(buf[:k])
		if err := writeSparse(f, buf[:k], off); err != nil {
			return "", fmt.Errorf("archive: %w", err)
		}
		off += int64(k)
	}
	if err := f.Truncate(mem.Size); err != nil {
		return "", fmt.Errorf("archive: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("archive: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checksums reads checksums.json, which must follow the last member, and
// checks it lists exactly m's members, in order, with the sums computed
// while extracting them.
func (x *extractor) checksums(m Manifest, seen map[string]bool, sums []string) error {
	hdr, err := x.next(m, seen)
	if err == io.EOF {
		return x.bad("%s missing", ChecksumsName)
	}
	if err != nil {
		return err
	}
	if hdr.Name != ChecksumsName {
		// next refuses a member seen or not listed: all are seen.
		return x.bad("entry %q after the last member", hdr.Name)
	}
	if hdr.Size > MaxChecksumsSize {
		return x.bad("%s: %d bytes, over the limit of %d", ChecksumsName, hdr.Size, MaxChecksumsSize)
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(x.tar, data); err != nil {
		return x.readErr(ChecksumsName, err)
	}
	var w wireChecksums
	if err := decodeStrict(data, &w); err != nil {
		return x.bad("%s: %v", ChecksumsName, err)
	}
	if w.Members == nil {
		return x.bad("%s: no members", ChecksumsName)
	}
	listed := *w.Members
	for i, mem := range m.Members {
		if i >= len(listed) {
			return x.bad("%s: member %q not listed", ChecksumsName, mem.Name)
		}
		c := listed[i]
		if c.Name != mem.Name {
			return x.bad("%s: lists %q where the manifest has member %q", ChecksumsName, c.Name, mem.Name)
		}
		if !validDigest(c.SHA256) {
			return x.bad("%s: member %q: sha256 %q is not 64 lower-case hex digits", ChecksumsName, c.Name, c.SHA256)
		}
		if c.SHA256 != sums[i] {
			return x.bad("member %q: sha256 mismatch (got %s, %s says %s)", mem.Name, sums[i], ChecksumsName, c.SHA256)
		}
	}
	if len(listed) > len(m.Members) {
		return x.bad("%s: lists %q, not a member", ChecksumsName, listed[len(m.Members)].Name)
	}
	return nil
}

const holeBlock = 4096

// writeSparse writes b at off, skipping whole all-zero blocks.
func writeSparse(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		n := min(len(b), holeBlock)
		if !allZero(b[:n]) {
			if _, err := f.WriteAt(b[:n], off); err != nil {
				return err
			}
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// end checks what follows checksums.json: the tar end-of-archive marker
// (two zero blocks), at most maxTrailer zero bytes of padding, then the end
// of the zstd stream and of the file.
func (x *extractor) end() error {
	before := x.count.n
	// tar.Reader skips the last entry's padding before the marker.
	before += (512 - before%512) % 512
	hdr, err := x.tar.Next()
	if err == nil {
		if hdr.Name == ChecksumsName {
			return x.bad("duplicate %s", ChecksumsName)
		}
		return x.bad("entry %q after %s", hdr.Name, ChecksumsName)
	}
	if err != io.EOF {
		return x.readErr("tar stream", err)
	}
	if x.count.n-before != 2*512 {
		return x.bad("tar stream truncated: no end-of-archive marker")
	}
	buf := make([]byte, 32<<10)
	var trailer int64
	for {
		k, err := x.count.Read(buf)
		trailer += int64(k)
		if !allZero(buf[:k]) || trailer > maxTrailer {
			return x.bad("data after the end of the tar stream")
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return x.readErr("after the tar stream", err)
		}
	}
}
