package guest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteResolvConf(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(etc, "resolv.conf")
	want := "# written by boxlite-agent: the host answers DNS for this box\nnameserver 192.168.127.1\n"
	check := func() uint64 {
		t.Helper()
		fi, err := os.Lstat(file)
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("resolv.conf: %v, %v", fi, err)
		}
		if b, _ := os.ReadFile(file); string(b) != want {
			t.Fatalf("resolv.conf = %q, want %q", b, want)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}

	// A symlink to a stub resolver is replaced, never followed.
	outside := filepath.Join(root, "stub")
	os.WriteFile(outside, []byte("nameserver 127.0.0.53\n"), 0o644)
	if err := os.Symlink(outside, file); err != nil {
		t.Fatal(err)
	}
	if err := writeResolvConf(root, []string{"192.168.127.1"}); err != nil {
		t.Fatal(err)
	}
	ino := check()
	if b, _ := os.ReadFile(outside); string(b) != "nameserver 127.0.0.53\n" {
		t.Fatalf("the symlink's target was written: %q", b)
	}

	// Unchanged: left alone (a restart does not rewrite it).
	if err := writeResolvConf(root, []string{"192.168.127.1"}); err != nil {
		t.Fatal(err)
	}
	if check() != ino {
		t.Fatal("an identical resolv.conf was rewritten")
	}

	// Changed by the box, same size: rewritten.
	os.WriteFile(file, []byte(want[:len(want)-2]+"9\n"), 0o644)
	if err := writeResolvConf(root, []string{"192.168.127.1"}); err != nil {
		t.Fatal(err)
	}
	check()

	if err := writeResolvConf(filepath.Join(root, "nope"), []string{"192.168.127.1"}); err == nil {
		t.Fatal("no /etc in the box: no error")
	}
}
