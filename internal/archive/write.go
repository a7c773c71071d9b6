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
	"hash"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

const copyBuf = 1 << 20

// Write writes an archive of the host files named by files (member name →
// host path) to w and returns its manifest. box is stored verbatim as the
// manifest's box options, image as its image reference. Members follow the
// manifest in name order.
//
// Write reads each file once: the manifest takes its size from stat, and
// its sha256, computed while it is stored, goes into checksums.json after
// the members. A file whose size or modification time changes while it is
// stored fails the call. Write never holds a file in memory. On error, w
// holds a partial archive: the caller writes to a temporary file and
// renames it only on success.
func Write(ctx context.Context, w io.Writer, box json.RawMessage, image string, files map[string]string) (Manifest, error) {
	if box == nil {
		box = json.RawMessage("null")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, box); err != nil {
		return Manifest{}, fmt.Errorf("archive: box options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	box = compact.Bytes()
	names := make([]string, 0, len(files))
	for name := range files {
		if !ValidName(name) {
			return Manifest{}, fmt.Errorf("archive: member %q: %w: %w", name, errNameInvalid, errdefs.ErrInvalidArgument)
		}
		names = append(names, name)
	}
	slices.Sort(names)

	m := Manifest{
		FormatVersion: FormatVersion,
		CreatedAt:     time.Now().UTC().Truncate(time.Second),
		Box:           box,
		Image:         image,
		Members:       make([]Member, 0, len(names)),
	}
	// Open every file first: the manifest needs their sizes, and the size
	// that is stored must be that of the file that is then read.
	srcs := make([]source, 0, len(names))
	defer func() {
		for _, s := range srcs {
			s.f.Close()
		}
	}()
	wm := wireManifest{FormatVersion: &m.FormatVersion, CreatedAt: &m.CreatedAt, Box: box, Image: &image}
	members := make([]wireMember, 0, len(names))
	for _, name := range names {
		f, fi, err := openRegular(files[name])
		if err != nil {
			return Manifest{}, fmt.Errorf("archive: member %q: %w", name, err)
		}
		size := fi.Size()
		srcs = append(srcs, source{f: f, path: files[name], size: size, mtime: fi.ModTime()})
		m.Members = append(m.Members, Member{Name: name, Size: size})
		members = append(members, wireMember{Name: name, Size: &size})
	}
	wm.Members = &members
	manifest, err := json.Marshal(wm)
	if err != nil {
		return Manifest{}, fmt.Errorf("archive: manifest: %w", err)
	}
	manifest = append(manifest, '\n')

	zw, err := zstd.NewWriter(w,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(max(2, min(4, runtime.GOMAXPROCS(0)))),
		zstd.WithWindowSize(8<<20),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return Manifest{}, fmt.Errorf("archive: zstd: %w", err)
	}
	err = writeTar(ctx, zw, &m, manifest, srcs)
	if cerr := zw.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("archive: %w", cerr)
	}
	if err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// source is an open member file and what stat said of it before it was
// read.
type source struct {
	f     *os.File
	path  string
	size  int64
	mtime time.Time
}

// writeTar writes manifest, the members (filling in m's sha256s) and
// checksums.json.
func writeTar(ctx context.Context, w io.Writer, m *Manifest, manifest []byte, srcs []source) error {
	tw := tar.NewWriter(w)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: m.CreatedAt}
	}
	if err := tw.WriteHeader(hdr(ManifestName, int64(len(manifest)))); err != nil {
		return fmt.Errorf("archive: manifest: %w", err)
	}
	if _, err := tw.Write(manifest); err != nil {
		return fmt.Errorf("archive: manifest: %w", err)
	}
	var bufs [hashBufs][]byte
	for i := range bufs {
		bufs[i] = make([]byte, copyBuf)
	}
	sums := make([]wireChecksum, 0, len(srcs))
	for i := range m.Members {
		mem := &m.Members[i]
		sum, err := writeMember(ctx, tw, hdr(mem.Name, mem.Size), srcs[i], bufs)
		if err != nil {
			return fmt.Errorf("archive: member %q: %w", mem.Name, err)
		}
		mem.SHA256 = sum
		sums = append(sums, wireChecksum{Name: mem.Name, SHA256: sum})
	}
	checksums, err := json.Marshal(wireChecksums{Members: &sums})
	if err != nil {
		return fmt.Errorf("archive: checksums: %w", err)
	}
	checksums = append(checksums, '\n')
	if err := tw.WriteHeader(hdr(ChecksumsName, int64(len(checksums)))); err != nil {
		return fmt.Errorf("archive: checksums: %w", err)
	}
	if _, err := tw.Write(checksums); err != nil {
		return fmt.Errorf("archive: checksums: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

// writeMember stores src as the entry hdr, whose size is the one stat gave
// before, and returns the hex sha256 of the bytes stored.
func writeMember(ctx context.Context, tw *tar.Writer, hdr *tar.Header, src source, bufs [hashBufs][]byte) (string, error) {
	if err := tw.WriteHeader(hdr); err != nil {
		return "", err
	}
	h := sha256.New()
	// Reading one byte past the size makes tar.Writer fail on a file that
	// grew; a file that shrank comes up short; and an in-place rewrite that
	// keeps the size moves the modification time.
	n, err := copyHashed(ctx, tw, h, io.LimitReader(src.f, src.size+1), bufs)
	if errors.Is(err, tar.ErrWriteTooLong) {
		return "", fmt.Errorf("%s grew while the archive was written", src.path)
	}
	if err != nil {
		return "", err
	}
	after, err := src.f.Stat()
	if err != nil {
		return "", err
	}
	if n != src.size || after.Size() != src.size || !after.ModTime().Equal(src.mtime) {
		return "", fmt.Errorf("%s changed while the archive was written", src.path)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// openRegular opens the regular file at path and stats it.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	return f, fi, nil
}

// hashBufs is the number of buffers copyHashed cycles through.
const hashBufs = 3

// copyHashed copies r to w, and to h, until r's EOF, checking ctx between
// chunks. h runs in its own goroutine, a chunk behind w, so that hashing
// overlaps with reading and compressing; it has consumed every byte when
// copyHashed returns.
func copyHashed(ctx context.Context, w io.Writer, h hash.Hash, r io.Reader, bufs [hashBufs][]byte) (n int64, err error) {
	free := make(chan []byte, len(bufs))
	for _, b := range bufs {
		free <- b
	}
	work := make(chan []byte, len(bufs))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range work {
			h.Write(b)
			free <- b[:cap(b)]
		}
	}()
	defer func() {
		close(work)
		<-done
	}()
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		// A buffer handed to the hasher is not touched again until it
		// comes back.
		buf := <-free
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return n, err
			}
			work <- buf[:k]
			n += int64(k)
		} else {
			free <- buf
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
