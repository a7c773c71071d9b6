package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// FormatVersion is the version of the format this package writes, and the
// only one it reads.
const FormatVersion = 2

// ManifestName is the name of the first tar entry of every archive.
const ManifestName = "manifest.json"

// ChecksumsName is the name of the last tar entry of every archive: the
// sha256 of each member, written after the members so that Write reads each
// member once.
const ChecksumsName = "checksums.json"

const (
	// MaxManifestSize bounds manifest.json.
	MaxManifestSize = 1 << 20
	// MaxChecksumsSize bounds checksums.json.
	MaxChecksumsSize = 1 << 20
	// MaxNameLen bounds a member name.
	MaxNameLen = 128
	// DefaultMaxMemberSize is the per-member limit Read applies when
	// Limits.MaxMemberSize is zero.
	DefaultMaxMemberSize = 1 << 40
	// DefaultMaxTotalSize is the all-members limit Read applies when
	// Limits.MaxTotalSize is zero.
	DefaultMaxTotalSize = 1 << 40

	// maxWindow is the largest zstd window Read accepts (Write uses 8 MiB).
	maxWindow = 64 << 20
	// maxTrailer bounds the zero bytes Read accepts after the end-of-archive
	// marker (tar writers may pad to a record size, 10240 bytes for GNU tar).
	maxTrailer = 1 << 20
)

// Manifest describes an archive. It is stored as manifest.json, except for
// each member's SHA256, which is stored in checksums.json (see the package
// documentation); Write and Read return it whole.
type Manifest struct {
	// FormatVersion is FormatVersion for archives this package writes.
	FormatVersion int `json:"format_version"`
	// CreatedAt is when Write started, UTC, whole seconds.
	CreatedAt time.Time `json:"created_at"`
	// Box holds the box's options; this package treats it as opaque JSON.
	Box json.RawMessage `json:"box"`
	// Image is the reference of the image the box was created from.
	Image string `json:"image"`
	// Members lists the files that follow the manifest, in archive order.
	Members []Member `json:"members"`
}

// Member is one file of an archive.
type Member struct {
	// Name is a plain file name: see ValidName.
	Name string `json:"name"`
	// Size is the member's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lower-case hex sha256 of the member's bytes.
	SHA256 string `json:"sha256"`
}

// Limits bounds what Read accepts before it extracts anything. A zero field
// takes its Default value.
type Limits struct {
	MaxMemberSize int64
	MaxTotalSize  int64
}

func (l Limits) resolve() (Limits, error) {
	if l.MaxMemberSize < 0 || l.MaxTotalSize < 0 {
		return l, fmt.Errorf("archive limits %+v: negative: %w", l, errdefs.ErrInvalidArgument)
	}
	if l.MaxMemberSize == 0 {
		l.MaxMemberSize = DefaultMaxMemberSize
	}
	if l.MaxTotalSize == 0 {
		l.MaxTotalSize = DefaultMaxTotalSize
	}
	return l, nil
}

// ErrBadArchive marks a file that is not a valid .boxlite archive: damaged,
// truncated, of an unknown version or malicious. It wraps
// errdefs.ErrInvalidArgument.
var ErrBadArchive = fmt.Errorf("bad boxlite archive: %w", errdefs.ErrInvalidArgument)

// FormatError is the error Read returns for a bad archive. errors.Is matches
// it with ErrBadArchive and errdefs.ErrInvalidArgument.
type FormatError struct {
	Path   string // the archive file
	Reason string // what is wrong, e.g. `member "disk.qcow2": sha256 mismatch`
	Err    error  // the decoder's error, if any
}

func (e *FormatError) Error() string {
	s := "bad boxlite archive " + e.Path + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrBadArchive and the decoder's error, if any.
func (e *FormatError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBadArchive}
	}
	return []error{ErrBadArchive, e.Err}
}

// ValidName reports whether name may name a member: 1 to MaxNameLen bytes of
// ASCII letters, digits, '.', '_' and '-', not starting with '.', and not
// ManifestName or ChecksumsName. Such a name is a plain base name on every host: no
// separator, no "..", never absolute.
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLen || name[0] == '.' || name == ManifestName || name == ChecksumsName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func validDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// wireManifest is manifest.json: every key is required.
type wireManifest struct {
	FormatVersion *int            `json:"format_version"`
	CreatedAt     *time.Time      `json:"created_at"`
	Box           json.RawMessage `json:"box"`
	Image         *string         `json:"image"`
	Members       *[]wireMember   `json:"members"`
}

type wireMember struct {
	Name string `json:"name"`
	Size *int64 `json:"size"`
}

// wireChecksums is checksums.json.
type wireChecksums struct {
	Members *[]wireChecksum `json:"members"`
}

type wireChecksum struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// errNameInvalid is the reason given for a name ValidName refuses.
var errNameInvalid = errors.New(`not a plain file name (allowed: letters, digits, '.', '_', '-'; no leading '.')`)
