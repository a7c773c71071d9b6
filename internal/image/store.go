package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Options configures a Store.
type Options struct {
	// Registries are tried in order for unqualified names and hold the
	// settings (plain HTTP, TLS, credentials) of each host. Empty:
	// docker.io only.
	Registries []Registry
	// Platform is "os/arch[/variant]" to pick from multi-arch indexes.
	// Empty: the host, "linux/" + GOARCH.
	Platform string
	// Keychain supplies credentials for registries without a Username.
	// Nil: authn.DefaultKeychain (the docker config file, $DOCKER_CONFIG).
	Keychain authn.Keychain
	// Transport is the base HTTP transport. Nil: a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives debug logs. Nil: discarded.
	Logger *slog.Logger
}

// Progress reports the download of one blob.
type Progress struct {
	Ref      string // canonical reference being pulled
	Digest   string // blob digest, "sha256:..."
	Complete int64  // bytes so far
	Total    int64  // blob size
	Cached   bool   // the blob was already in the store; nothing fetched
}

// Config is the part of the image config a box needs.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Layer is one layer blob of an image, in application order.
type Layer struct {
	Digest    string `json:"digest"`           // compressed blob digest
	DiffID    string `json:"diffID,omitempty"` // uncompressed tar digest
	MediaType string `json:"mediaType,omitempty"`
	Size      int64  `json:"size"`
}

// Image is a pulled image whose blobs are all in the store.
type Image struct {
	Ref          string    `json:"ref"`          // canonical reference
	Digest       string    `json:"digest"`       // manifest digest
	ConfigDigest string    `json:"configDigest"` // config blob digest
	Platform     string    `json:"platform,omitempty"`
	Config       Config    `json:"config"`
	Layers       []Layer   `json:"layers"`
	ManifestSize int64     `json:"manifestSize"`
	ConfigSize   int64     `json:"configSize"`
	Pulled       time.Time `json:"pulled"`
	// SourceStamp identifies the version of a local source (size and
	// mtime) so a changed file is imported again.
	SourceStamp string `json:"sourceStamp,omitempty"`

	blobs string // the store's blobs/sha256 directory
}

// Store is a content-addressed image cache in a directory, safe for
// concurrent use by goroutines and processes. Layout:
//
//	blobs/sha256/<hex>   manifests, configs and layers, verified on write
//	refs/<sha256(ref)>.json  one record per canonical reference (an Image)
//	locks/               flock files: gc.lock, one per reference
//	tmp/                 per-pull staging; renamed into blobs/ on success
//
// A pull stages every new blob, verifies it, then renames it into blobs/
// and writes the reference record last, so an interrupted or failed pull
// leaves no entry. Pulls hold gc.lock shared; Remove and Prune hold it
// exclusively.
type Store struct {
	dir      string
	opts     Options
	platform v1.Platform
	log      *slog.Logger
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	p, err := parsePlatform(opts.Platform)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"blobs/sha256", "refs", "locks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("image store %s: %w", dir, err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{dir: dir, opts: opts, platform: p, log: log}, nil
}

func parsePlatform(s string) (v1.Platform, error) {
	if s == "" {
		p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		if runtime.GOARCH == "arm64" {
			p.Variant = "v8"
		}
		return p, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("image platform %q: %w", s, errdefs.ErrInvalidArgument)
	}
	return *p, nil
}

func (s *Store) blobDir() string { return filepath.Join(s.dir, "blobs", "sha256") }

func (s *Store) refPath(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return filepath.Join(s.dir, "refs", hex.EncodeToString(sum[:])+".json")
}

func (s *Store) lockPath(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return filepath.Join(s.dir, "locks", hex.EncodeToString(sum[:])+".lock")
}

func (s *Store) gcLock(ctx context.Context, exclusive bool) (*fileLock, error) {
	return lockFile(ctx, filepath.Join(s.dir, "locks", "gc.lock"), exclusive)
}

// blobPath maps "sha256:<hex>" to its file, rejecting anything else.
func blobPath(dir, digest string) (string, error) {
	h, err := v1.NewHash(digest)
	if err != nil || h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return "", fmt.Errorf("bad digest %q", digest)
	}
	return filepath.Join(dir, h.Hex), nil
}

// Pull returns the image for ref, from the store if it is there (no
// network I/O) or else from the first candidate source that has it.
// progress, if not nil, is called as blobs download.
func (s *Store) Pull(ctx context.Context, ref string, progress func(Progress)) (*Image, error) {
	cands, err := ParseReference(ref, s.opts.Registries)
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		if img, ok := s.lookup(c); ok {
			s.log.Debug("image cache hit", "image", c.String(), "digest", img.Digest)
			return img, nil
		}
	}
	var errs []error
	for _, c := range cands {
		img, err := s.pullOne(ctx, c, progress)
		if err == nil {
			return img, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		s.log.Debug("image pull failed", "image", c.String(), "err", err)
		// A missing, unreachable or refused candidate: try the next one.
		if !errors.Is(err, ErrImageNotFound) && !errors.Is(err, ErrRegistryUnreachable) &&
			!errors.Is(err, ErrImageUnauthorized) {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, pickError(ref, errs)
}

// pickError reports a failure over several candidates: the first that is
// not "not found" (a refusal or an outage says more), else the first;
// the others are named in the message.
func pickError(ref string, errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	pick := 0
	for i, e := range errs {
		if !errors.Is(e, ErrImageNotFound) {
			pick = i
			break
		}
	}
	var others []string
	for i, e := range errs {
		if i != pick {
			others = append(others, e.Error())
		}
	}
	var e *Error
	if errors.As(errs[pick], &e) {
		return &Error{Ref: ref, Kind: e.Kind, Err: fmt.Errorf("%w (also tried: %s)", errs[pick], strings.Join(others, "; "))}
	}
	return errs[pick]
}

// stamp identifies the current version of a local source.
func stamp(c Ref) string {
	p := c.Path
	if c.Kind == SourceOCILayout {
		p = filepath.Join(p, "index.json")
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
}

// lookup returns the stored image for c if its record and every blob are
// present.
func (s *Store) lookup(c Ref) (*Image, bool) {
	img, err := s.readRecord(s.refPath(c.String()))
	if err != nil {
		return nil, false
	}
	if c.Kind != SourceRegistry && img.SourceStamp != stamp(c) {
		return nil, false
	}
	if !img.complete() {
		return nil, false
	}
	return img, true
}

func (s *Store) readRecord(path string) (*Image, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, err
	}
	img.blobs = s.blobDir()
	return &img, nil
}

// complete reports whether every blob of img is in the store with its size.
func (img *Image) complete() bool {
	check := func(d string, size int64) bool {
		p, err := blobPath(img.blobs, d)
		if err != nil {
			return false
		}
		fi, err := os.Stat(p)
		return err == nil && fi.Mode().IsRegular() && fi.Size() == size
	}
	if !check(img.Digest, img.ManifestSize) || !check(img.ConfigDigest, img.ConfigSize) {
		return false
	}
	for _, l := range img.Layers {
		if !check(l.Digest, l.Size) {
			return false
		}
	}
	return true
}

// blobs lists every digest img references.
func (img *Image) digests() []string {
	d := []string{img.Digest, img.ConfigDigest}
	for _, l := range img.Layers {
		d = append(d, l.Digest)
	}
	return d
}

// List returns the stored images, sorted by reference.
func (s *Store) List(ctx context.Context) ([]*Image, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "refs"))
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", s.dir, err)
	}
	var out []*Image
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		img, err := s.readRecord(filepath.Join(s.dir, "refs", e.Name()))
		if err != nil {
			continue // removed meanwhile, or being replaced
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Remove deletes the record for ref (any of its candidates, or every
// reference of a manifest digest "sha256:...") and the blobs no other
// image uses.
func (s *Store) Remove(ctx context.Context, ref string) error {
	l, err := s.gcLock(ctx, true)
	if err != nil {
		return fmt.Errorf("image %q: remove: %w", ref, err)
	}
	defer l.unlock()
	var paths []string
	if strings.HasPrefix(ref, "sha256:") {
		imgs, err := s.List(ctx)
		if err != nil {
			return err
		}
		for _, img := range imgs {
			if img.Digest == ref {
				paths = append(paths, s.refPath(img.Ref))
			}
		}
	} else {
		cands, err := ParseReference(ref, s.opts.Registries)
		if err != nil {
			return err
		}
		for _, c := range cands {
			if p := s.refPath(c.String()); fileExists(p) {
				paths = append(paths, p)
				break
			}
		}
	}
	if len(paths) == 0 {
		return newError(ref, ErrImageNotFound, fmt.Errorf("not in the store"))
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("image %q: remove: %w", ref, err)
		}
	}
	return s.collect()
}

// Prune removes every image whose manifest digest keep rejects (all of
// them if keep is nil), then unreferenced blobs and stale staging files.
// It returns the removed references.
func (s *Store) Prune(ctx context.Context, keep func(digest string) bool) ([]string, error) {
	l, err := s.gcLock(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("image store: prune: %w", err)
	}
	defer l.unlock()
	imgs, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, img := range imgs {
		if keep != nil && keep(img.Digest) {
			continue
		}
		if err := os.Remove(s.refPath(img.Ref)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("image %q: prune: %w", img.Ref, err)
		}
		removed = append(removed, img.Ref)
	}
	return removed, s.collect()
}

// collect deletes blobs no record references and everything in tmp/.
// The caller holds gc.lock exclusively, so no pull is running.
func (s *Store) collect() error {
	imgs, err := s.List(context.Background())
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, img := range imgs {
		for _, d := range img.digests() {
			if h, err := v1.NewHash(d); err == nil {
				used[h.Hex] = true
			}
		}
	}
	ents, err := os.ReadDir(s.blobDir())
	if err != nil {
		return fmt.Errorf("image store %s: %w", s.dir, err)
	}
	for _, e := range ents {
		if !used[e.Name()] {
			if err := os.Remove(filepath.Join(s.blobDir(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("image store %s: %w", s.dir, err)
			}
		}
	}
	tmp, _ := os.ReadDir(filepath.Join(s.dir, "tmp"))
	for _, e := range tmp {
		_ = os.RemoveAll(filepath.Join(s.dir, "tmp", e.Name()))
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// writeFileAtomic writes b to path through a temporary file and rename.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// copyVerified copies r into path while hashing, then checks size and
// digest. A mismatch after the full size arrived is ErrImageCorrupt; a
// short read keeps the read error.
func copyVerified(ctx context.Context, path string, r io.Reader, want v1.Hash, size int64, report func(int64)) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 128<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			if size >= 0 && n+int64(m) > size {
				return fmt.Errorf("blob %s: %w: more than %d bytes", want, errMismatch, size)
			}
			if _, err := f.Write(buf[:m]); err != nil {
				return err
			}
			h.Write(buf[:m])
			n += int64(m)
			if report != nil {
				report(n)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if n == size && hex.EncodeToString(h.Sum(nil)) != want.Hex {
				// ggcr verifies too and fails at EOF; the bytes are wrong.
				return fmt.Errorf("blob %s: %w", want, errMismatch)
			}
			return rerr
		}
	}
	if size >= 0 && n != size {
		return fmt.Errorf("blob %s: %w: %d bytes, want %d", want, errMismatch, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("blob %s: %w: got sha256:%s", want, errMismatch, got)
	}
	return f.Sync()
}
