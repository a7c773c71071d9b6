package image

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func TestParseReference(t *testing.T) {
	const dg = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	local := Registry{Host: "localhost:5000", Insecure: true}
	mirror := Registry{Host: "mirror.example.com"}
	abs, _ := filepath.Abs("some/dir")
	tests := []struct {
		name string
		in   string
		regs []Registry
		want []string
		err  error
	}{
		{"bare name", "alpine", nil, []string{"docker.io/library/alpine:latest"}, nil},
		{"tag", "alpine:3.19", nil, []string{"docker.io/library/alpine:3.19"}, nil},
		{"user repo", "user/app:v1", nil, []string{"docker.io/user/app:v1"}, nil},
		{"docker.io explicit", "docker.io/alpine", nil, []string{"docker.io/library/alpine:latest"}, nil},
		{"index.docker.io", "index.docker.io/library/alpine:edge", nil, []string{"docker.io/library/alpine:edge"}, nil},
		{"digest", "alpine@" + dg, nil, []string{"docker.io/library/alpine@" + dg}, nil},
		{"tag and digest", "alpine:3.19@" + dg, nil, []string{"docker.io/library/alpine@" + dg}, nil},
		{"other registry", "ghcr.io/owner/img:1", nil, []string{"ghcr.io/owner/img:1"}, nil},
		{"localhost", "localhost/img", nil, []string{"localhost/img:latest"}, nil},
		{"host:port", "localhost:5000/img", []Registry{mirror}, []string{"localhost:5000/img:latest"}, nil},
		{"unqualified over registries", "alpine", []Registry{local, mirror, {Host: "docker.io"}},
			[]string{"localhost:5000/alpine:latest", "mirror.example.com/alpine:latest", "docker.io/library/alpine:latest"}, nil},
		{"oci layout", "oci:some/dir", nil, []string{"oci:" + abs}, nil},
		{"oci layout tag", "oci:some/dir:v2", nil, []string{"oci:" + abs + ":v2"}, nil},
		{"docker archive", "docker-archive:some/dir", nil, []string{"docker-archive:" + abs}, nil},
		{"empty", "", nil, nil, ErrInvalidReference},
		{"upper case", "Alpine", nil, nil, ErrInvalidReference},
		{"bad tag", "alpine:not valid", nil, nil, ErrInvalidReference},
		{"empty oci", "oci:", nil, nil, ErrInvalidReference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refs, err := ParseReference(tt.in, tt.regs)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseReferenceRegistrySettings(t *testing.T) {
	regs := []Registry{{Host: "localhost:5000", Insecure: true, Username: "u"}}
	refs, err := ParseReference("localhost:5000/app", regs)
	if err != nil {
		t.Fatal(err)
	}
	if refs[0].Registry.Username != "u" || refs[0].Name.Context().Scheme() != "http" {
		t.Fatalf("registry settings not applied: %+v scheme %s", refs[0].Registry, refs[0].Name.Context().Scheme())
	}
}
