package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// errMismatch marks content that does not match its digest or size.
var errMismatch = errors.New("digest mismatch")

// ociRefName is the annotation naming a manifest in an OCI layout index.
const ociRefName = "org.opencontainers.image.ref.name"

// pullOne fetches candidate c into the store. One pull per reference runs
// at a time (across processes); a waiter finds the result in the store.
func (s *Store) pullOne(ctx context.Context, c Ref, progress func(Progress)) (*Image, error) {
	ref := c.String()
	rl, err := lockFile(ctx, s.lockPath(ref), true)
	if err != nil {
		return nil, classify(ctx, ref, err)
	}
	defer rl.unlock()
	if img, ok := s.lookup(c); ok {
		return img, nil
	}
	gl, err := s.gcLock(ctx, false)
	if err != nil {
		return nil, classify(ctx, ref, err)
	}
	defer gl.unlock()

	src, want, err := s.resolve(ctx, c)
	if err != nil {
		return nil, classify(ctx, ref, err)
	}
	img, err := s.fetch(ctx, c, src, want, progress)
	if err != nil {
		return nil, classify(ctx, ref, err)
	}
	return img, nil
}

func (s *Store) remoteOptions(ctx context.Context, reg Registry) []remote.Option {
	base := s.opts.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	if reg.SkipTLSVerify {
		if t, ok := base.(*http.Transport); ok {
			t = t.Clone()
			if t.TLSClientConfig == nil {
				t.TLSClientConfig = &tls.Config{}
			}
			t.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // asked for by the registry setting
			base = t
		}
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(base),
		remote.WithPlatform(s.platform),
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}),
	}
	if reg.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}))
	} else {
		kc := s.opts.Keychain
		if kc == nil {
			kc = authn.DefaultKeychain
		}
		opts = append(opts, remote.WithAuthFromKeychain(kc))
	}
	return opts
}

// resolve finds the single-platform image c names. want is the manifest
// digest when it is known in advance (by-digest reference, index entry).
func (s *Store) resolve(ctx context.Context, c Ref) (v1.Image, *v1.Hash, error) {
	switch c.Kind {
	case SourceOCILayout:
		return s.resolveLayout(c)
	case SourceDockerArchive:
		if _, err := os.Stat(c.Path); err != nil {
			return nil, nil, kindErr(ErrImageNotFound, err)
		}
		img, err := tarball.ImageFromPath(c.Path, nil)
		if err != nil {
			return nil, nil, kindErr(ErrImageCorrupt, err)
		}
		return img, nil, nil
	}
	desc, err := remote.Get(c.Name, s.remoteOptions(ctx, c.Registry)...)
	if err != nil {
		return nil, nil, err
	}
	var want *v1.Hash
	if d, ok := c.Name.(name.Digest); ok {
		h, err := v1.NewHash(d.DigestStr())
		if err != nil {
			return nil, nil, kindErr(ErrInvalidReference, err)
		}
		want = &h
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, nil, err
		}
		return s.fromIndex(idx)
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		return img, want, err
	}
	return nil, nil, kindErr(ErrImageCorrupt, fmt.Errorf("unsupported manifest media type %q", desc.MediaType))
}

func (s *Store) resolveLayout(c Ref) (v1.Image, *v1.Hash, error) {
	if _, err := os.Stat(filepath.Join(c.Path, "index.json")); err != nil {
		return nil, nil, kindErr(ErrImageNotFound, err)
	}
	idx, err := layout.ImageIndexFromPath(c.Path)
	if err != nil {
		return nil, nil, kindErr(ErrImageCorrupt, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, kindErr(ErrImageCorrupt, err)
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		n := d.Annotations[ociRefName]
		if c.Tag == "" || n == c.Tag {
			found = append(found, d)
		}
	}
	if len(found) > 1 && c.Tag == "" {
		var latest []v1.Descriptor
		for _, d := range found {
			if d.Annotations[ociRefName] == "latest" {
				latest = append(latest, d)
			}
		}
		found = latest
		if len(found) == 0 {
			return nil, nil, kindErr(ErrTagNotFound, fmt.Errorf("layout holds several images; name one with oci:PATH:TAG"))
		}
	}
	if len(found) == 0 {
		return nil, nil, kindErr(ErrTagNotFound, fmt.Errorf("no manifest named %q in the layout", c.Tag))
	}
	d := found[0]
	switch {
	case d.MediaType.IsIndex():
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, nil, kindErr(ErrImageCorrupt, err)
		}
		return s.fromIndex(child)
	case d.MediaType.IsImage():
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, nil, kindErr(ErrImageCorrupt, err)
		}
		return img, &d.Digest, nil
	}
	return nil, nil, kindErr(ErrImageCorrupt, fmt.Errorf("unsupported manifest media type %q", d.MediaType))
}

// fromIndex picks the manifest for the store's platform.
func (s *Store) fromIndex(idx v1.ImageIndex) (v1.Image, *v1.Hash, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	var have []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			continue
		}
		have = append(have, d.Platform.String())
		if d.MediaType.IsImage() && platformMatches(s.platform, *d.Platform) {
			img, err := idx.Image(d.Digest)
			return img, &d.Digest, err
		}
	}
	return nil, nil, kindErr(ErrPlatformNotFound, fmt.Errorf("want %s, index has [%s]", s.platform.String(), strings.Join(have, ", ")))
}

func platformMatches(want, got v1.Platform) bool {
	if want.OS != got.OS || want.Architecture != got.Architecture {
		return false
	}
	if want.Variant == "" || got.Variant == "" {
		return true
	}
	return want.Variant == got.Variant
}

// fetch stages every blob of src that the store lacks, verifies it, and
// commits: blobs renamed into place, then the reference record.
func (s *Store) fetch(ctx context.Context, c Ref, src v1.Image, want *v1.Hash, progress func(Progress)) (*Image, error) {
	ref := c.String()
	stage, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "pull-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	var staged []string

	rawManifest, err := src.RawManifest()
	if err != nil {
		return nil, err
	}
	mSum := sha256.Sum256(rawManifest)
	mDigest := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(mSum[:])}
	if want != nil && *want != mDigest {
		return nil, kindErr(ErrImageCorrupt, fmt.Errorf("manifest is %s, want %s", mDigest, want))
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, kindErr(ErrImageCorrupt, fmt.Errorf("manifest: %w", err))
	}
	rawConfig, err := src.RawConfigFile()
	if err != nil {
		return nil, err
	}
	cSum := sha256.Sum256(rawConfig)
	if m.Config.Digest.Algorithm != "sha256" || m.Config.Digest.Hex != hex.EncodeToString(cSum[:]) {
		return nil, kindErr(ErrImageCorrupt, fmt.Errorf("config blob does not match %s", m.Config.Digest))
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, kindErr(ErrImageCorrupt, fmt.Errorf("config: %w", err))
	}
	got := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if cfg.OS != "" && cfg.Architecture != "" && !platformMatches(s.platform, got) {
		return nil, kindErr(ErrPlatformNotFound, fmt.Errorf("image is %s, want %s", got.String(), s.platform.String()))
	}
	for _, b := range []struct {
		d   v1.Hash
		raw []byte
	}{{mDigest, rawManifest}, {m.Config.Digest, rawConfig}} {
		if err := os.WriteFile(filepath.Join(stage, b.d.Hex), b.raw, 0o644); err != nil {
			return nil, err
		}
		staged = append(staged, b.d.Hex)
	}

	layers, err := src.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != len(m.Layers) {
		return nil, kindErr(ErrImageCorrupt, fmt.Errorf("manifest lists %d layers, image has %d", len(m.Layers), len(layers)))
	}
	img := &Image{
		Ref:          ref,
		Digest:       mDigest.String(),
		ConfigDigest: m.Config.Digest.String(),
		ManifestSize: int64(len(rawManifest)),
		ConfigSize:   int64(len(rawConfig)),
		Config: Config{
			Entrypoint: cfg.Config.Entrypoint,
			Cmd:        cfg.Config.Cmd,
			Env:        cfg.Config.Env,
			WorkingDir: cfg.Config.WorkingDir,
			User:       cfg.Config.User,
		},
		Pulled: time.Now().UTC(),
		blobs:  s.blobDir(),
	}
	if cfg.OS != "" {
		img.Platform = got.String()
	}
	if c.Kind != SourceRegistry {
		img.SourceStamp = stamp(c)
	}
	for i, d := range m.Layers {
		if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
			return nil, kindErr(ErrImageCorrupt, fmt.Errorf("layer digest %q", d.Digest))
		}
		l := Layer{Digest: d.Digest.String(), MediaType: string(d.MediaType), Size: d.Size}
		if i < len(cfg.RootFS.DiffIDs) && len(cfg.RootFS.DiffIDs) == len(m.Layers) {
			l.DiffID = cfg.RootFS.DiffIDs[i].String()
		}
		img.Layers = append(img.Layers, l)
		final := filepath.Join(s.blobDir(), d.Digest.Hex)
		if fi, err := os.Stat(final); err == nil && fi.Size() == d.Size {
			if progress != nil {
				progress(Progress{Ref: ref, Digest: l.Digest, Complete: d.Size, Total: d.Size, Cached: true})
			}
			continue
		}
		if fileExists(filepath.Join(stage, d.Digest.Hex)) {
			continue // the same blob twice in one image
		}
		rc, err := layers[i].Compressed()
		if err != nil {
			return nil, err
		}
		var report func(int64)
		if progress != nil {
			report = func(n int64) { progress(Progress{Ref: ref, Digest: l.Digest, Complete: n, Total: d.Size}) }
		}
		err = copyVerified(ctx, filepath.Join(stage, d.Digest.Hex), rc, d.Digest, d.Size, report)
		rc.Close()
		if err != nil {
			return nil, err
		}
		staged = append(staged, d.Digest.Hex)
	}

	for _, h := range staged {
		if err := os.Rename(filepath.Join(stage, h), filepath.Join(s.blobDir(), h)); err != nil {
			return nil, err
		}
	}
	rec, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(s.refPath(ref), rec); err != nil {
		return nil, err
	}
	s.log.Debug("image pulled", "image", ref, "digest", img.Digest, "layers", len(img.Layers))
	return img, nil
}

// kindErr tags err with a sentinel kind; classify turns it into an *Error.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

func kindErr(k, err error) error { return &kindError{kind: k, err: err} }

// classify maps a failure to an *Error with the right kind.
func classify(ctx context.Context, ref string, err error) error {
	var ie *Error
	if errors.As(err, &ie) {
		return err
	}
	var ke *kindError
	if errors.As(err, &ke) {
		return newError(ref, ke.kind, ke.err)
	}
	if ctx.Err() != nil {
		return newError(ref, errdefs.ErrImage, ctx.Err())
	}
	if errors.Is(err, errMismatch) || isVerifyError(err) {
		return newError(ref, ErrImageCorrupt, err)
	}
	// Connection-level failures first: a ping that failed over HTTPS
	// (refused, bad certificate) also carries the HTTP fallback's status.
	var oe *net.OpError
	var ue *url.Error
	var dnse *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &ue) || errors.As(err, &dnse) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) {
		return newError(ref, ErrRegistryUnreachable, err)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			switch d.Code {
			case transport.NameUnknownErrorCode:
				return newError(ref, ErrImageNotFound, err)
			case transport.ManifestUnknownErrorCode:
				return newError(ref, ErrTagNotFound, err)
			case transport.BlobUnknownErrorCode:
				return newError(ref, ErrImageNotFound, err)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return newError(ref, ErrImageUnauthorized, err)
			}
		}
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return newError(ref, ErrImageUnauthorized, err)
		case te.StatusCode == http.StatusNotFound:
			return newError(ref, ErrImageNotFound, err)
		case te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests:
			return newError(ref, ErrRegistryUnreachable, err)
		}
		return newError(ref, errdefs.ErrImage, err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return newError(ref, ErrImageNotFound, err)
	}
	return newError(ref, errdefs.ErrImage, err)
}

// isVerifyError recognises go-containerregistry's digest check failure
// (internal/verify.Error, not reachable with errors.As).
func isVerifyError(err error) bool {
	return strings.Contains(err.Error(), "error verifying sha256 checksum") ||
		strings.Contains(err.Error(), "error verifying size")
}
