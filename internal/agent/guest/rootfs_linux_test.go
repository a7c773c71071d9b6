package guest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bothResolvers runs f with openat2 and with the resolveInRoot fallback
// that kernels before 5.6 get.
func bothResolvers(t *testing.T, f func(t *testing.T)) {
	t.Run("openat2", f)
	t.Run("walk", func(t *testing.T) {
		noOpenat2.Store(true)
		defer noOpenat2.Store(false)
		f(t)
	})
}

func TestLookPath(t *testing.T) {
	root := t.TempDir()
	makeTree(t, root, map[string]string{
		"bin/busybox":        "x",
		"bin/sh":             "l:/bin/busybox",
		"usr/bin/plain":      "f",
		"usr/local/bin/both": "f",
		"usr/bin/both":       "x",
		"usr/bin/dir":        "d",
		"usr/sbin/out":       "l:../../../../../../bin/sh",
	})
	path := "/usr/local/bin:/usr/bin:/bin:relative:"
	tests := []struct {
		name    string
		path    string
		want    string
		wantErr error
	}{
		{"sh", path, "/bin/sh", nil},
		{"both", path, "/usr/bin/both", nil},
		{"plain", path, "", errNotExecutable},
		{"dir", path, "", errNotInPath},
		{"nope", path, "", errNotInPath},
		{"out", "/usr/sbin", "/usr/sbin/out", nil}, // ".." stops at the box root
	}
	bothResolvers(t, func(t *testing.T) {
		b := newBoxFS(root)
		for _, tt := range tests {
			got, err := b.lookPath(tt.name, tt.path)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("lookPath(%q) = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.wantErr)
			}
		}
	})
}

// TestBoxFSConfined checks that symlinks in the box cannot reach the
// agent's own files: absolute targets and ".." resolve inside the root.
func TestBoxFSConfined(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	makeTree(t, root, map[string]string{
		"abs":      "l:" + outside,
		"rel":      "l:../../../../../../../../" + outside,
		"etc/hmm":  "d",
		"loop1":    "l:/loop2",
		"loop2":    "l:loop1",
		"work/dir": "d",
	})
	bothResolvers(t, func(t *testing.T) {
		b := newBoxFS(root)
		for _, p := range []string{"/abs/secret", "/rel/secret"} {
			if fd, err := b.open(p, unix.O_RDONLY); err == nil {
				unix.Close(fd)
				t.Errorf("open(%s) reached a file outside the box", p)
			} else if !errors.Is(err, unix.ENOENT) {
				t.Errorf("open(%s) = %v, want ENOENT", p, err)
			}
		}
		if _, err := b.stat("/loop1"); !errors.Is(err, unix.ELOOP) {
			t.Errorf("stat(/loop1) = %v, want ELOOP", err)
		}
		if !b.isDir("/work/../work/dir") || b.isDir("/abs") || b.isDir("/missing") {
			t.Error("isDir answers wrong")
		}
	})
}

// TestAccountCache checks that cached account files are re-read when they
// change, and that a missing or oversized file is handled.
func TestAccountCache(t *testing.T) {
	root := t.TempDir()
	b := newBoxFS(root)
	if got, err := b.passwd.read(b, "/etc/passwd"); err != nil || len(got) != 0 {
		t.Fatalf("missing passwd: %v, %v", got, err)
	}
	passwd := filepath.Join(root, "etc/passwd")
	os.MkdirAll(filepath.Dir(passwd), 0o755)
	write := func(s string) {
		// A new file each time, like useradd: the inode changes.
		tmp := passwd + ".new"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, passwd); err != nil {
			t.Fatal(err)
		}
	}
	write("root:x:0:0:root:/root:/bin/sh\n")
	got, err := b.passwd.read(b, "/etc/passwd")
	if err != nil || len(got) != 1 || got[0].Home != "/root" {
		t.Fatalf("first read: %+v, %v", got, err)
	}
	write("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
	got, err = b.passwd.read(b, "/etc/passwd")
	if err != nil || len(got) != 2 {
		t.Fatalf("after a change: %+v, %v", got, err)
	}
	// Rewritten in place with the same size: mtime/ctime tell.
	f, err := os.OpenFile(passwd, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("bobby"), int64(len("root:x:0:0:root:/root:/bin/sh\n")))
	f.Close()
	got, err = b.passwd.read(b, "/etc/passwd")
	if err != nil || len(got) != 2 || got[1].Name != "bobby" {
		t.Fatalf("after an in-place write: %+v, %v", got, err)
	}

	if err := os.Remove(passwd); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(passwd, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := b.passwd.read(b, "/etc/passwd"); err == nil {
		t.Fatal("a directory as /etc/passwd was read")
	}
}

// TestAccountCacheHit checks that an unchanged file is parsed once.
func TestAccountCacheHit(t *testing.T) {
	root := t.TempDir()
	makeTree(t, root, map[string]string{"etc/group": "d"})
	os.Remove(filepath.Join(root, "etc/group"))
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nwheel:x:10:root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBoxFS(root)
	g1, err := b.group.read(b, "/etc/group")
	if err != nil || len(g1) != 2 {
		t.Fatal(g1, err)
	}
	g2, _ := b.group.read(b, "/etc/group")
	if &g1[0] == &g2[0] {
		t.Fatal("a file changed just now was cached")
	}
	defer func(w time.Duration) { racyWindow = w }(racyWindow)
	racyWindow = -time.Hour
	g1, _ = b.group.read(b, "/etc/group")
	g2, _ = b.group.read(b, "/etc/group")
	if len(g2) != 2 || &g1[0] != &g2[0] {
		t.Fatal("an unchanged file was parsed again")
	}
	// Replaced (a new inode, as editors and useradd do): read again even
	// though the cache would accept a file of any age.
	tmp := filepath.Join(root, "etc/group.new")
	if err := os.WriteFile(tmp, []byte("root:x:0:\nwheel:x:10:root\nstaff:x:50:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "etc/group")); err != nil {
		t.Fatal(err)
	}
	if g3, err := b.group.read(b, "/etc/group"); err != nil || len(g3) != 3 {
		t.Fatalf("a replaced file was served from the cache: %+v, %v", g3, err)
	}
}
