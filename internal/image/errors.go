package image

import (
	"fmt"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// kind is a sentinel error that also matches its parents with errors.Is,
// so ErrImageNotFound is both errdefs.ErrNotFound and errdefs.ErrImage.
type kind struct {
	msg     string
	parents []error
}

func (k *kind) Error() string   { return k.msg }
func (k *kind) Unwrap() []error { return k.parents }

func newKind(msg string, parents ...error) error { return &kind{msg: msg, parents: parents} }

// Sentinel errors, tested with errors.Is. Every one of them also matches
// errdefs.ErrImage; the not-found ones also match errdefs.ErrNotFound.
var (
	// ErrInvalidReference: the reference string cannot be parsed
	// (also errdefs.ErrInvalidArgument).
	ErrInvalidReference = newKind("invalid image reference", errdefs.ErrInvalidArgument, errdefs.ErrImage)
	// ErrImageNotFound: no registry or local source holds the repository.
	ErrImageNotFound = newKind("image not found", errdefs.ErrNotFound, errdefs.ErrImage)
	// ErrTagNotFound: the repository exists but not the tag or digest.
	// It also matches ErrImageNotFound.
	ErrTagNotFound = newKind("image tag not found", ErrImageNotFound)
	// ErrImageUnauthorized: the registry refused the credentials.
	ErrImageUnauthorized = newKind("registry authentication failed", errdefs.ErrImage)
	// ErrRegistryUnreachable: the registry could not be reached or answered
	// with a server error.
	ErrRegistryUnreachable = newKind("registry unreachable", errdefs.ErrImage)
	// ErrPlatformNotFound: the image has no variant for the wanted platform.
	ErrPlatformNotFound = newKind("no image for platform", errdefs.ErrImage)
	// ErrImageCorrupt: content does not match its digest or cannot be
	// decoded.
	ErrImageCorrupt = newKind("image content corrupt", errdefs.ErrImage)
	// ErrUnsafeLayer: a layer entry would write outside the root (an
	// absolute or ".." path, a write through a symlink, a hard link to a
	// path outside the root).
	ErrUnsafeLayer = newKind("unsafe layer entry", errdefs.ErrImage)
)

// Error is the error type returned by this package: the reference it
// concerns, the sentinel kind and the underlying cause. errors.Is matches
// both Kind and Err.
type Error struct {
	Ref  string // the reference as given or normalised
	Kind error  // one of the sentinels above, or errdefs.ErrImage
	Err  error  // the cause, may be nil
}

func (e *Error) Error() string {
	s := fmt.Sprintf("image %q: %v", e.Ref, e.Kind)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func newError(ref string, k error, err error) error {
	return &Error{Ref: ref, Kind: k, Err: err}
}
