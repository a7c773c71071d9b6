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
// Write reads each file twice: once to size and hash it for the manifest,
// once to store it; a file that changes in between fails the call. It never
// holds a file in memory. On error, w holds a partial archive: the caller
// writes to a temporary file and renames it only on success.
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
	buf := make([]byte, copyBuf)
	mtimes := map[string]time.Time{}
	for _, name := range names {
		size, sum, mtime, err := hashFile(ctx, files[name], buf)
		if err != nil {
			return Manifest{}, fmt.Errorf("archive: member %q: %w", name, err)
		}
		mtimes[name] = mtime
		m.Members = append(m.Members, Member{Name: name, Size: size, SHA256: sum})
	}
	manifest, err := json.Marshal(m)
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
	err = writeTar(ctx, zw, m, manifest, files, mtimes, buf)
	if cerr := zw.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("archive: %w", cerr)
	}
	if err != nil {
		return Manifest{}, err
	}
	return m, nil
}

func writeTar(ctx context.Context, w io.Writer, m Manifest, manifest []byte, files map[string]string, mtimes map[string]time.Time, buf []byte) error {
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
	for _, mem := range m.Members {
		if err := writeMember(ctx, tw, hdr(mem.Name, mem.Size), files[mem.Name], mem, mtimes[mem.Name], buf); err != nil {
			return fmt.Errorf("archive: member %q: %w", mem.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

func writeMember(ctx context.Context, tw *tar.Writer, hdr *tar.Header, path string, mem Member, mtime time.Time, buf []byte) error {
	f, err := openRegular(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// The hash pass already read the file: instead of hashing it again,
	// check that its size and modification time did not move since.
	n, err := copyHashed(ctx, tw, nopHash{}, io.LimitReader(f, mem.Size+1), buf)
	if errors.Is(err, tar.ErrWriteTooLong) {
		return fmt.Errorf("%s grew while the archive was written", path)
	}
	if err != nil {
		return err
	}
	after, err := f.Stat()
	if err != nil {
		return err
	}
	if n != mem.Size || !after.ModTime().Equal(mtime) || after.Size() != mem.Size {
		return fmt.Errorf("%s changed while the archive was written", path)
	}
	return nil
}

// hashFile returns the size and hex sha256 of the regular file at path.
func hashFile(ctx context.Context, path string, buf []byte) (int64, string, time.Time, error) {
	f, err := openRegular(path)
	if err != nil {
		return 0, "", time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, "", time.Time{}, err
	}
	h := sha256.New()
	n, err := copyHashed(ctx, io.Discard, h, f, buf)
	if err != nil {
		return 0, "", time.Time{}, err
	}
	return n, hex.EncodeToString(h.Sum(nil)), fi.ModTime(), nil
}

func openRegular(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	return f, nil
}

// copyHashed copies r to w, and to h, until r's EOF, checking ctx between
// chunks.
func copyHashed(ctx context.Context, w io.Writer, h hash.Hash, r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := r.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// nopHash discards what it is given.
type nopHash struct{}

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }
func (nopHash) Sum(b []byte) []byte         { return b }
func (nopHash) Reset()                      {}
func (nopHash) Size() int                   { return 0 }
func (nopHash) BlockSize() int              { return 1 }
