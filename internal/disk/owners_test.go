package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// inodeStat reads back one inode of an ext4 image with debugfs.
type inodeStat struct {
	typ, mode, user, group, dev string
}

func statInode(t *testing.T, image, p string) inodeStat {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "stat "+quote(p), image).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs stat %s: %v: %s", p, err, out)
	}
	s := string(out)
	find := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(s)
		if m == nil {
			return ""
		}
		return m[1]
	}
	return inodeStat{
		typ:   find(`Type: (\S+)`),
		mode:  find(`Mode:\s+(\d+)`),
		user:  find(`User:\s+(\d+)`),
		group: find(`Group:\s+(\d+)`),
		dev:   find(`Device major/minor number: (\S+)`),
	}
}

func TestBaseFromTreeOwners(t *testing.T) {
	needTools(t)
	if _, err := lookTool("debugfs"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"etc", "dev", "home/user", `odd dir/with "quotes"`} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"etc/shadow", "home/user/notes", `odd dir/with "quotes"/a file`, "bin-sh"} {
		if err := os.WriteFile(filepath.Join(tree, f), []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("notes", filepath.Join(tree, "home/user/link")); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	owners := []Owner{
		{Path: "", Mode: fs.ModeDir | 0o755},
		{Path: "etc", Mode: fs.ModeDir | 0o755},
		{Path: "etc/shadow", Mode: 0o640, UID: 0, GID: 42},
		{Path: "home/user", Mode: fs.ModeDir | 0o700, UID: 1000, GID: 1000},
		{Path: "home/user/notes", Mode: 0o600, UID: 1000, GID: 1000},
		{Path: "home/user/link", Mode: fs.ModeSymlink | 0o777, UID: 1000, GID: 1000},
		{Path: `odd dir/with "quotes"/a file`, Mode: fs.ModeSetuid | 0o755, UID: 7, GID: 8},
		{Path: "bin-sh", Mode: 0o644, UID: uid, GID: gid}, // as on disk: untouched
		{Path: "dev/null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Major: 1, Minor: 3},
		{Path: "dev/sda", Mode: fs.ModeDevice | 0o660, GID: 6, Major: 8, Minor: 0},
		{Path: "dev/fifo", Mode: fs.ModeNamedPipe | 0o620, UID: 5},
	}
	script, n, err := fixScript(tree, owners)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(script), "bin-sh") {
		t.Errorf("script touches a path that is already right:\n%s", script)
	}
	if want := len(owners) - 1; uid == 0 && n != want-2 { // "" and etc are right as root
		t.Errorf("script changes %d paths, want %d:\n%s", n, want-2, script)
	}

	base := filepath.Join(dir, "base.ext4")
	if err := BaseFromTree(ctx, tree, base, 64<<20, owners); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want inodeStat
	}{
		{"/", inodeStat{typ: "directory", mode: "0755", user: "0", group: "0"}},
		{"/etc/shadow", inodeStat{typ: "regular", mode: "0640", user: "0", group: "42"}},
		{"/home/user", inodeStat{typ: "directory", mode: "0700", user: "1000", group: "1000"}},
		{"/home/user/notes", inodeStat{typ: "regular", mode: "0600", user: "1000", group: "1000"}},
		{"/home/user/link", inodeStat{typ: "symlink", mode: "0777", user: "1000", group: "1000"}},
		{`/odd dir/with "quotes"/a file`, inodeStat{typ: "regular", mode: "04755", user: "7", group: "8"}},
		{"/bin-sh", inodeStat{typ: "regular", mode: "0644", user: itoa(uid), group: itoa(gid)}},
		{"/dev/null", inodeStat{typ: "character", mode: "0666", user: "0", group: "0", dev: "01:03"}},
		{"/dev/sda", inodeStat{typ: "block", mode: "0660", user: "0", group: "6", dev: "08:00"}},
		{"/dev/fifo", inodeStat{typ: "FIFO", mode: "0620", user: "5", group: "0"}},
	} {
		got := statInode(t, base, tc.path)
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.path, got, tc.want)
		}
	}
	// Names libss would split or interpret, taken literally.
	odd := []string{`back\slash`, "tab\there", "semi;colon#hash", " leading space", "ünïcode", `"`, "-dash"}
	var oddOwners []Owner
	for i, n := range odd {
		if err := os.WriteFile(filepath.Join(tree, "etc", n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		oddOwners = append(oddOwners, Owner{Path: "etc/" + n, Mode: 0o600, UID: 100 + i, GID: 200 + i},
			Owner{Path: "dev/" + n, Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, UID: 100 + i, Major: 1, Minor: uint32(i)})
	}
	odd2 := filepath.Join(dir, "odd.ext4")
	if err := BaseFromTree(ctx, tree, odd2, 64<<20, oddOwners); err != nil {
		t.Fatal(err)
	}
	for i, n := range odd {
		if got := statInode(t, odd2, "/etc/"+n); got.user != itoa(100+i) || got.group != itoa(200+i) || got.mode != "0600" {
			t.Errorf("/etc/%q: %+v", n, got)
		}
		if got := statInode(t, odd2, "/dev/"+n); got.typ != "character" || got.user != itoa(100+i) || got.dev != fmt.Sprintf("01:%02x", i) {
			t.Errorf("/dev/%q: %+v", n, got)
		}
	}

	// The device nodes were linked into /dev, not as names with slashes.
	out, err := exec.Command("debugfs", "-R", "ls /", base).Output()
	if err != nil || strings.Contains(string(out), "dev/") {
		t.Errorf("root directory: %v: %s", err, out)
	}
}

func TestFixOwnersErrors(t *testing.T) {
	tree := t.TempDir()
	os.WriteFile(filepath.Join(tree, "file"), nil, 0o644)
	for _, tc := range []struct {
		name  string
		owner Owner
		want  string
	}{
		{"newline", Owner{Path: "a\nb", Mode: 0o644}, "newline"},
		{"carriage return", Owner{Path: "a\rb"}, "newline"},
		{"escape", Owner{Path: "../etc/passwd"}, "parent directory"},
		{"missing", Owner{Path: "nope", Mode: 0o644}, "not in the tree"},
		{"type", Owner{Path: "file", Mode: fs.ModeDir | 0o755}, "type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := fixScript(tree, []Owner{tc.owner})
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrInvalidArgument mentioning %q", err, tc.want)
			}
		})
	}
}

func TestFixOwnersReportsDebugfsErrors(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	image := filepath.Join(dir, "img.ext4")
	if err := BaseFromDir(context.Background(), t.TempDir(), image, 64<<20); err != nil {
		t.Fatal(err)
	}
	err := runDebugfs(context.Background(), image, []byte("set_inode_field /missing uid 5\n"))
	if err == nil || !strings.Contains(err.Error(), "/missing") {
		t.Fatalf("got %v, want the debugfs error", err)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/passwd":   `"/etc/passwd"`,
		"/a b":          `"/a b"`,
		`/say "hi"`:     `"/say ""hi"""`,
		"/tab\there":    "\"/tab\there\"",
		"/back\\slash":  `"/back\slash"`,
		"/semi;colon#x": `"/semi;colon#x"`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
