package guest

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

const testPasswd = `# comment
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1::/usr/sbin:/usr/sbin/nologin

alice:x:1000:1000:Alice:/home/alice:/bin/bash
bob:x:1001:100::/home/bob
+nis:x:5:5::/:/bin/sh
broken:x:abc:1::/:/bin/sh
short:x:7
carol:x:1002:1002
`

const testGroup = `root:x:0:
wheel:x:10:root,alice
users:x:100:bob
alice:x:1000:
audio:x:29:alice, bob
bad:x:notanumber:alice
staff:x:50:
`

func TestParsePasswd(t *testing.T) {
	entries, err := parsePasswd(strings.NewReader(testPasswd))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if want := []string{"root", "daemon", "alice", "bob", "carol"}; !slices.Equal(names, want) {
		t.Fatalf("names = %v, want %v", names, want)
	}
	if e := entries[2]; e.UID != 1000 || e.GID != 1000 || e.Home != "/home/alice" || e.Shell != "/bin/bash" {
		t.Errorf("alice = %+v", e)
	}
	if e := entries[4]; e.Home != "" || e.UID != 1002 {
		t.Errorf("carol = %+v", e)
	}
}

func TestParseGroup(t *testing.T) {
	groups, err := parseGroup(strings.NewReader(testGroup))
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 6 {
		t.Fatalf("got %d groups, want 6: %+v", len(groups), groups)
	}
	if g := groups[4]; g.Name != "audio" || !slices.Equal(g.Members, []string{"alice", "bob"}) {
		t.Errorf("audio = %+v", g)
	}
}

func TestResolveUser(t *testing.T) {
	passwd, _ := parsePasswd(strings.NewReader(testPasswd))
	groups, _ := parseGroup(strings.NewReader(testGroup))
	tests := []struct {
		name    string
		spec    string
		want    execUser
		wantErr error
		errText string
	}{
		{name: "empty is root", spec: "", want: execUser{Name: "root", UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root"}},
		{name: "name", spec: "alice", want: execUser{Name: "alice", UID: 1000, GID: 1000, Groups: []uint32{1000, 10, 29}, Home: "/home/alice"}},
		{name: "uid in passwd", spec: "1001", want: execUser{Name: "bob", UID: 1001, GID: 100, Groups: []uint32{100, 29}, Home: "/home/bob"}},
		{name: "uid not in passwd", spec: "4242", want: execUser{UID: 4242, GID: 0, Groups: []uint32{0}, Home: "/"}},
		{name: "name:group", spec: "alice:staff", want: execUser{Name: "alice", UID: 1000, GID: 50, Groups: []uint32{50}, Home: "/home/alice"}},
		{name: "name:gid", spec: "alice:77", want: execUser{Name: "alice", UID: 1000, GID: 77, Groups: []uint32{77}, Home: "/home/alice"}},
		{name: "uid:gid", spec: "5:6", want: execUser{UID: 5, GID: 6, Groups: []uint32{6}, Home: "/"}},
		{name: "no home", spec: "carol", want: execUser{Name: "carol", UID: 1002, GID: 1002, Groups: []uint32{1002}, Home: "/"}},
		{name: "unknown name", spec: "mallory", wantErr: errUnknownUser, errText: `unknown user "mallory"`},
		{name: "unknown group", spec: "alice:nope", wantErr: errUnknownGroup, errText: `unknown group "nope"`},
		{name: "NIS entry is not a user", spec: "+nis", wantErr: errUnknownUser},
		{name: "uid -1", spec: "4294967295", wantErr: errUnknownUser},
		{name: "too many colons", spec: "a:b:c", wantErr: errBadUserSpec},
		{name: "empty group", spec: "alice:", wantErr: errBadUserSpec},
		{name: "empty user", spec: ":staff", wantErr: errBadUserSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveUser(tt.spec, passwd, groups)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if tt.errText != "" && err.Error() != tt.errText {
					t.Fatalf("err = %q, want %q", err.Error(), tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tt.want.Name || got.UID != tt.want.UID || got.GID != tt.want.GID ||
				got.Home != tt.want.Home || !slices.Equal(got.Groups, tt.want.Groups) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte(testPasswd), "alice")
	f.Add([]byte(testGroup), "root:wheel")
	f.Add([]byte("a:b:1:2:c:d:e\n:::\n\n#x\nz:x:4294967295:0\n"), "0:0")
	f.Add([]byte("x:x:0:0\r\ny:y:01:002:::"), "y")
	f.Fuzz(func(t *testing.T, data []byte, spec string) {
		passwd, err := parsePasswd(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		groups, err := parseGroup(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range passwd {
			if e.Name == "" || strings.ContainsAny(e.Name, ":\n") || e.UID == 1<<32-1 || e.GID == 1<<32-1 {
				t.Fatalf("bad passwd entry %+v", e)
			}
		}
		for _, g := range groups {
			if g.Name == "" || strings.ContainsAny(g.Name, ":\n") || g.GID == 1<<32-1 {
				t.Fatalf("bad group entry %+v", g)
			}
			for _, m := range g.Members {
				if m == "" || strings.ContainsAny(m, ",:\n") {
					t.Fatalf("bad member %q in %+v", m, g)
				}
			}
		}
		u, err := resolveUser(spec, passwd, groups)
		if err != nil {
			if !errors.Is(err, errUnknownUser) && !errors.Is(err, errUnknownGroup) && !errors.Is(err, errBadUserSpec) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if len(u.Groups) == 0 || u.Groups[0] != u.GID || u.Home == "" {
			t.Fatalf("bad user %+v", u)
		}
	})
}
