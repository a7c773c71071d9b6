package image

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Entry records the metadata of one path of an unpacked rootfs as the
// image defines it. When not running as root the files on disk are owned
// by the current user, directories keep u+rwx and files u+r (so the tree
// stays readable and removable), and device nodes are not created: the
// ext4 builder applies Entries instead. As root everything is applied on
// disk as well (ownership with Lchown, modes, devices with mknod when
// permitted).
type Entry struct {
	Path     string            `json:"path"`               // slash-separated, relative to the root
	Type     byte              `json:"type"`               // tar typeflag: tar.TypeReg, TypeDir, TypeSymlink, TypeLink, ...
	Mode     fs.FileMode       `json:"mode"`               // permission and setuid/setgid/sticky bits
	UID      int               `json:"uid"`                // owner
	GID      int               `json:"gid"`                // group
	Linkname string            `json:"linkname,omitempty"` // symlink target, or hard link source path
	Devmajor int64             `json:"devmajor,omitempty"`
	Devminor int64             `json:"devminor,omitempty"`
	ModTime  time.Time         `json:"mtime"`
	Xattrs   map[string]string `json:"xattrs,omitempty"`
}

// Unpack writes the merged rootfs of img into dst, which must not exist:
// layers are applied in order into a sibling temporary directory (with
// whiteouts and opaque directories), each layer's blob is re-verified
// against its digest while it streams, and the directory is renamed to
// dst at the end; on error nothing is left. Entries that would escape
// the root fail with ErrUnsafeLayer. It returns the metadata of every
// path, sorted by path (see Entry).
func Unpack(ctx context.Context, img *Image, dst string) ([]Entry, error) {
	if _, err := os.Lstat(dst); err == nil {
		return nil, fmt.Errorf("image %q: unpack %s: %w", img.Ref, dst, errdefs.ErrAlreadyExists)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("image %q: unpack: %w", img.Ref, err)
	}
	ok := false
	defer func() {
		if !ok {
			makeRemovable(tmp)
			os.RemoveAll(tmp)
		}
	}()
	u := newUnpacker(tmp)
	for _, l := range img.Layers {
		if err := u.applyBlob(ctx, img.blobs, l); err != nil {
			return nil, wrapUnpack(img.Ref, err)
		}
	}
	entries, err := u.finish()
	if err != nil {
		return nil, wrapUnpack(img.Ref, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, fmt.Errorf("image %q: unpack: %w", img.Ref, err)
	}
	ok = true
	return entries, nil
}

func wrapUnpack(ref string, err error) error {
	var ke *kindError
	if errors.As(err, &ke) {
		return newError(ref, ke.kind, ke.err)
	}
	if errors.Is(err, errMismatch) {
		return newError(ref, ErrImageCorrupt, err)
	}
	return newError(ref, errdefs.ErrImage, fmt.Errorf("unpack: %w", err))
}

// makeRemovable gives the owner rwx on every directory under root so
// RemoveAll works as non-root.
func makeRemovable(root string) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
}

// decompress returns the uncompressed tar stream of a layer blob, by the
// blob's magic bytes: gzip, zstd or plain tar. klauspost/compress decodes
// about twice as fast as the standard library.
func decompress(r *bufio.Reader) (io.ReadCloser, error) {
	magic, err := r.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return kgzip.NewReader(r)
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return io.NopCloser(r), nil
}

// readAhead decodes r in its own goroutine, up to depth chunks ahead of
// the reader, so decompression overlaps with writing files (two cores).
// Close stops the goroutine and waits for it, so r may be closed after.
func readAhead(r io.Reader, depth int) io.ReadCloser {
	a := &aheadReader{chunks: make(chan []byte, depth), stop: make(chan struct{}), finished: make(chan struct{})}
	go a.fill(r)
	return a
}

type aheadReader struct {
	chunks   chan []byte
	stop     chan struct{}
	finished chan struct{}
	err      error // set before chunks is closed
	cur      []byte
	once     bool
}

func (a *aheadReader) fill(r io.Reader) {
	defer close(a.finished)
	defer close(a.chunks)
	for {
		buf := make([]byte, 256<<10)
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			select {
			case a.chunks <- buf[:n]:
			case <-a.stop:
				return
			}
		}
		if err != nil {
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				a.err = err
			}
			return
		}
	}
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		c, ok := <-a.chunks
		if !ok {
			if a.err != nil {
				return 0, a.err
			}
			return 0, io.EOF
		}
		a.cur = c
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

func (a *aheadReader) Close() error {
	if !a.once {
		a.once = true
		close(a.stop)
	}
	<-a.finished
	return nil
}

func (u *unpacker) applyBlob(ctx context.Context, dir string, l Layer) error {
	p, err := blobPath(dir, l.Digest)
	if err != nil {
		return kindErr(ErrImageCorrupt, err)
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return kindErr(ErrImageNotFound, fmt.Errorf("layer %s missing from the store", l.Digest))
		}
		return err
	}
	defer f.Close()
	sum := sha256.New()
	rc, err := decompress(bufio.NewReaderSize(io.TeeReader(f, sum), 1<<20))
	if err != nil {
		return kindErr(ErrImageCorrupt, fmt.Errorf("layer %s: %w", l.Digest, err))
	}
	defer rc.Close()
	diff := sha256.New()
	ahead := readAhead(io.TeeReader(rc, diff), 16)
	defer ahead.Close()
	if err := u.apply(ctx, ahead); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, ahead); err != nil {
		return kindErr(ErrImageCorrupt, fmt.Errorf("layer %s: %w", l.Digest, err))
	}
	if _, err := io.Copy(sum, f); err != nil { // any bytes after the compressed stream
		return err
	}
	if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != l.Digest {
		return kindErr(ErrImageCorrupt, fmt.Errorf("layer %s: stored blob is %s", l.Digest, got))
	}
	if got := "sha256:" + hex.EncodeToString(diff.Sum(nil)); l.DiffID != "" && got != l.DiffID {
		return kindErr(ErrImageCorrupt, fmt.Errorf("layer %s: uncompressed digest %s, want %s", l.Digest, got, l.DiffID))
	}
	return nil
}

// unpacker applies layer tars onto a root directory it owns exclusively.
type unpacker struct {
	root    string
	isRoot  bool
	entries map[string]*Entry
	layer   map[string]bool // paths written by the layer being applied
	opaque  []string        // opaque directories of the layer being applied
}

func newUnpacker(root string) *unpacker {
	return &unpacker{root: root, isRoot: os.Geteuid() == 0, entries: map[string]*Entry{}}
}

func unsafeErr(format string, args ...any) error {
	return kindErr(ErrUnsafeLayer, fmt.Errorf(format, args...))
}

// cleanName validates a tar path: relative, no ".." element, no NUL.
// It returns the cleaned slash path, "" for the root itself.
func cleanName(n string) (string, error) {
	if strings.ContainsRune(n, 0) {
		return "", unsafeErr("entry %q: NUL in name", n)
	}
	if strings.HasPrefix(n, "/") {
		return "", unsafeErr("entry %q: absolute path", n)
	}
	for _, e := range strings.Split(n, "/") {
		if e == ".." {
			return "", unsafeErr("entry %q: parent directory reference", n)
		}
	}
	c := path.Clean(n)
	if c == "." {
		return "", nil
	}
	return c, nil
}

func (u *unpacker) host(name string) string {
	return filepath.Join(u.root, filepath.FromSlash(name))
}

// prepareParents makes every ancestor of name a real directory inside the
// root, creating missing ones; a symlink among them is unsafe (a write
// through it could leave the root), so it is refused rather than followed.
func (u *unpacker) prepareParents(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	cur := ""
	for _, e := range strings.Split(dir, "/") {
		cur = path.Join(cur, e)
		p := u.host(cur)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			u.entries[cur] = &Entry{Path: cur, Type: tar.TypeDir, Mode: 0o755}
			continue
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return unsafeErr("entry %q: parent %q is a symlink", name, cur)
		case !fi.IsDir():
			return unsafeErr("entry %q: parent %q is not a directory", name, cur)
		}
	}
	return nil
}

// remove deletes name and everything below it, on disk and in entries.
// The caller has checked that name's parents are real directories.
func (u *unpacker) remove(name string) error {
	if err := os.RemoveAll(u.host(name)); err != nil {
		return err
	}
	delete(u.entries, name)
	prefix := name + "/"
	for k := range u.entries {
		if strings.HasPrefix(k, prefix) {
			delete(u.entries, k)
		}
	}
	return nil
}

// apply applies one uncompressed layer tar.
func (u *unpacker) apply(ctx context.Context, r io.Reader) error {
	u.layer = map[string]bool{}
	u.opaque = nil
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return kindErr(ErrImageCorrupt, fmt.Errorf("layer tar: %w", err))
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	for _, d := range u.opaque {
		if err := u.clearOpaque(d); err != nil {
			return err
		}
	}
	return nil
}

// clearOpaque removes whatever lower layers put below dir.
func (u *unpacker) clearOpaque(dir string) error {
	ents, err := os.ReadDir(u.host(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := path.Join(dir, e.Name())
		if dir == "" {
			n = e.Name()
		}
		if !u.layer[n] {
			if err := u.remove(n); err != nil {
				return err
			}
			continue
		}
		if e.Type().IsDir() {
			if err := u.clearOpaque(n); err != nil {
				return err
			}
		}
	}
	return nil
}

func (u *unpacker) entry(hdr *tar.Header, tr io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if isSparse(hdr) {
		// The reader would expand the holes: a few bytes of input could
		// claim terabytes. Image builders do not write sparse entries.
		return kindErr(ErrImageCorrupt, fmt.Errorf("entry %q: sparse tar entries are not supported", name))
	}
	if name == "" {
		// The root itself: keep its metadata for the final directory.
		if hdr.Typeflag == tar.TypeDir {
			u.entries[""] = u.newEntry(hdr, "")
		}
		return nil
	}
	base := path.Base(name)
	if strings.HasPrefix(base, ".wh.") {
		if err := u.prepareParents(name); err != nil {
			return err
		}
		dir := path.Dir(name)
		if dir == "." {
			dir = ""
		}
		switch {
		case base == ".wh..wh..opq":
			u.opaque = append(u.opaque, dir)
		case strings.HasPrefix(base, ".wh..wh."):
			// aufs metadata (.wh..wh.plnk, ...): ignored
		default:
			target, err := cleanName(path.Join(dir, strings.TrimPrefix(base, ".wh.")))
			if err != nil || target == "" || path.Dir(target) != path.Dir(name) {
				return unsafeErr("whiteout %q", hdr.Name)
			}
			if !u.layer[target] {
				return u.remove(target)
			}
		}
		return nil
	}
	if err := u.prepareParents(name); err != nil {
		return err
	}
	p := u.host(name)
	if fi, err := os.Lstat(p); err == nil {
		if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			if err := u.remove(name); err != nil {
				return err
			}
		}
	}
	e := u.newEntry(hdr, name)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case tar.TypeReg:
		e.Type = tar.TypeReg
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return kindErr(ErrImageCorrupt, fmt.Errorf("entry %q: %w", name, err))
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return kindErr(ErrImageCorrupt, fmt.Errorf("entry %q: empty symlink target", name))
		}
		if err := os.Symlink(hdr.Linkname, p); err != nil {
			return err
		}
	case tar.TypeLink:
		src, err := cleanName(hdr.Linkname)
		if err != nil || src == "" {
			return unsafeErr("hard link %q -> %q: target outside the root", name, hdr.Linkname)
		}
		if err := u.checkParents(src); err != nil {
			return unsafeErr("hard link %q -> %q: %v", name, hdr.Linkname, err)
		}
		fi, err := os.Lstat(u.host(src))
		if err != nil || fi.IsDir() {
			return kindErr(ErrImageCorrupt, fmt.Errorf("hard link %q -> %q: no such file", name, hdr.Linkname))
		}
		if err := os.Link(u.host(src), p); err != nil {
			return err
		}
		if se, ok := u.entries[src]; ok {
			c := *se
			c.Path, c.Type, c.Linkname = name, tar.TypeLink, src
			u.entries[name] = &c
		} else {
			u.entries[name] = &Entry{Path: name, Type: tar.TypeLink, Linkname: src, Mode: fi.Mode().Perm()}
		}
		u.markLayer(name)
		return nil // metadata belongs to the shared inode
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := u.mknod(p, hdr); err != nil {
			return err
		}
	default:
		return nil // unknown types are skipped
	}
	u.entries[name] = e
	u.markLayer(name)
	return u.applyMeta(p, e)
}

// markLayer records that the current layer wrote name, and so holds its
// ancestors: an opaque directory keeps them and clears only what lower
// layers put beside them.
func (u *unpacker) markLayer(name string) {
	for n := name; n != "." && n != "" && !u.layer[n]; n = path.Dir(n) {
		u.layer[n] = true
	}
}

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// checkParents is prepareParents without creating anything.
func (u *unpacker) checkParents(name string) error {
	cur := ""
	for _, e := range strings.Split(path.Dir(name), "/") {
		if e == "." {
			break
		}
		cur = path.Join(cur, e)
		fi, err := os.Lstat(u.host(cur))
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("parent %q is not a directory", cur)
		}
	}
	return nil
}

func (u *unpacker) mknod(p string, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeFifo {
		return unix.Mkfifo(p, 0o600)
	}
	if !u.isRoot {
		return nil // recorded in Entries only
	}
	mode := uint32(unix.S_IFCHR)
	if hdr.Typeflag == tar.TypeBlock {
		mode = unix.S_IFBLK
	}
	err := unix.Mknod(p, mode|0o600, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	if errors.Is(err, unix.EPERM) {
		return nil // no CAP_MKNOD (container): recorded in Entries only
	}
	return err
}

func (u *unpacker) newEntry(hdr *tar.Header, name string) *Entry {
	e := &Entry{
		Path:     name,
		Type:     hdr.Typeflag,
		Mode:     tarMode(hdr.Mode),
		UID:      hdr.Uid,
		GID:      hdr.Gid,
		Devmajor: hdr.Devmajor,
		Devminor: hdr.Devminor,
		ModTime:  hdr.ModTime,
	}
	if hdr.Typeflag == tar.TypeSymlink {
		e.Linkname = hdr.Linkname
	}
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[x] = v
		}
	}
	return e
}

// tarMode converts tar mode bits (c_ISUID, ...) to an fs.FileMode.
func tarMode(m int64) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// applyMeta sets ownership (root only), xattrs, mode and times on p, never
// following a symlink. Directory modes and times are set in finish, after
// their contents are written.
func (u *unpacker) applyMeta(p string, e *Entry) error {
	if u.isRoot {
		if err := os.Lchown(p, e.UID, e.GID); err != nil && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EINVAL) {
			return err
		}
	}
	for k, v := range e.Xattrs {
		if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil && !errors.Is(err, unix.EPERM) &&
			!errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EACCES) {
			return err
		}
	}
	switch e.Type {
	case tar.TypeDir, tar.TypeSymlink:
	default:
		mode := e.Mode
		if !u.isRoot {
			mode |= 0o400
		}
		if err := os.Chmod(p, mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if e.Type != tar.TypeDir {
		return setTimes(p, e.ModTime)
	}
	return nil
}

func setTimes(p string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	ts := unix.NsecToTimespec(t.UnixNano())
	err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a device node not created as non-root
	}
	return err
}

// finish sets directory modes and times, deepest first, and returns the
// entries sorted by path.
func (u *unpacker) finish() ([]Entry, error) {
	var dirs []*Entry
	for _, e := range u.entries {
		if e.Type == tar.TypeDir {
			dirs = append(dirs, e)
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i].Path) > len(dirs[j].Path) })
	for _, e := range dirs {
		p := u.host(e.Path)
		mode := e.Mode
		if !u.isRoot {
			mode |= 0o700
		}
		if e.Path == "" && e.Mode == 0 {
			mode = 0o755
		}
		if err := os.Chmod(p, mode); err != nil {
			return nil, err
		}
		if err := setTimes(p, e.ModTime); err != nil {
			return nil, err
		}
	}
	if _, ok := u.entries[""]; !ok {
		if err := os.Chmod(u.root, 0o755); err != nil {
			return nil, err
		}
	}
	out := make([]Entry, 0, len(u.entries))
	for _, e := range u.entries {
		if e.Path != "" {
			out = append(out, *e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
