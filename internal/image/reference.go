package image

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// DockerHub is the registry host unqualified names resolve to when no
// registries are configured.
const DockerHub = "docker.io"

// Registry describes one registry: where unqualified names are looked up
// (in list order) and how to talk to it.
type Registry struct {
	Host          string // "docker.io", "ghcr.io", "localhost:5000"
	Insecure      bool   // plain HTTP (local registries)
	SkipTLSVerify bool   // HTTPS without certificate verification
	Username      string // basic credentials; empty: docker config file
	Password      string
}

// SourceKind says where an image comes from.
type SourceKind int

const (
	// SourceRegistry is an image in an OCI distribution registry.
	SourceRegistry SourceKind = iota
	// SourceOCILayout is an OCI image layout directory ("oci:PATH[:TAG]").
	SourceOCILayout
	// SourceDockerArchive is a "docker save" tarball ("docker-archive:PATH").
	SourceDockerArchive
)

// Ref is one parsed, normalised image reference.
type Ref struct {
	Kind     SourceKind
	Name     name.Reference // SourceRegistry only
	Registry Registry       // settings of Name's registry
	Path     string         // local sources: absolute path
	Tag      string         // SourceOCILayout: ref.name annotation, may be empty
}

// String is the canonical form: "docker.io/library/alpine:latest",
// "oci:/abs/dir:tag", "docker-archive:/abs/file.tar".
func (r Ref) String() string {
	switch r.Kind {
	case SourceOCILayout:
		if r.Tag != "" {
			return "oci:" + r.Path + ":" + r.Tag
		}
		return "oci:" + r.Path
	case SourceDockerArchive:
		return "docker-archive:" + r.Path
	}
	if r.Name == nil {
		return ""
	}
	s := r.Name.Name()
	if rest, ok := strings.CutPrefix(s, name.DefaultRegistry+"/"); ok {
		s = DockerHub + "/" + rest
	}
	return s
}

// ParseReference normalises s the way docker does and returns the
// candidates to try, in order. A name with a registry host
// ("ghcr.io/x/y", "localhost:5000/y") yields one candidate; an
// unqualified name ("alpine", "library/alpine:3.19") yields one per
// registry in regs (docker.io if regs is empty). "library/" is implied
// only on docker.io. "oci:PATH[:TAG]" and "docker-archive:PATH" name local
// sources.
func ParseReference(s string, regs []Registry) ([]Ref, error) {
	if s == "" {
		return nil, newError(s, ErrInvalidReference, fmt.Errorf("empty reference"))
	}
	if rest, ok := strings.CutPrefix(s, "oci:"); ok {
		p, tag := rest, ""
		if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
			p, tag = rest[:i], rest[i+1:]
		}
		if p == "" {
			return nil, newError(s, ErrInvalidReference, fmt.Errorf("empty path"))
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, newError(s, ErrInvalidReference, err)
		}
		return []Ref{{Kind: SourceOCILayout, Path: abs, Tag: tag}}, nil
	}
	if rest, ok := strings.CutPrefix(s, "docker-archive:"); ok {
		if rest == "" {
			return nil, newError(s, ErrInvalidReference, fmt.Errorf("empty path"))
		}
		abs, err := filepath.Abs(rest)
		if err != nil {
			return nil, newError(s, ErrInvalidReference, err)
		}
		return []Ref{{Kind: SourceDockerArchive, Path: abs}}, nil
	}
	if qualified(s) {
		n, err := name.ParseReference(s)
		if err != nil {
			return nil, newError(s, ErrInvalidReference, err)
		}
		reg := lookupRegistry(n.Context().RegistryStr(), regs)
		if reg.Insecure {
			if n, err = name.ParseReference(s, name.Insecure); err != nil {
				return nil, newError(s, ErrInvalidReference, err)
			}
		}
		return []Ref{{Kind: SourceRegistry, Name: n, Registry: reg}}, nil
	}
	if len(regs) == 0 {
		regs = []Registry{{Host: DockerHub}}
	}
	out := make([]Ref, 0, len(regs))
	for _, reg := range regs {
		if reg.Host == "" {
			return nil, newError(s, ErrInvalidReference, fmt.Errorf("registry with empty host"))
		}
		opts := []name.Option{name.WithDefaultRegistry(reg.Host)}
		if reg.Insecure {
			opts = append(opts, name.Insecure)
		}
		n, err := name.ParseReference(s, opts...)
		if err != nil {
			return nil, newError(s, ErrInvalidReference, err)
		}
		out = append(out, Ref{Kind: SourceRegistry, Name: n, Registry: reg})
	}
	return out, nil
}

// qualified reports whether the first path component of s is a registry
// host, by docker's rule: it contains "." or ":" or is "localhost".
func qualified(s string) bool {
	first, _, ok := strings.Cut(s, "/")
	if !ok {
		return false
	}
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

func canonicalHost(h string) string {
	switch h {
	case name.DefaultRegistry, "registry-1.docker.io", DockerHub:
		return DockerHub
	}
	return h
}

// lookupRegistry returns the configured settings for host, or bare
// settings naming it.
func lookupRegistry(host string, regs []Registry) Registry {
	for _, r := range regs {
		if canonicalHost(r.Host) == canonicalHost(host) {
			return r
		}
	}
	return Registry{Host: canonicalHost(host)}
}
