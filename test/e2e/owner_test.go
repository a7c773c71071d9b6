package e2e

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

// The unprivileged half of TestImageOwnersUnprivileged runs in a copy of
// this test binary started as nobody; these variables tell it so.
const (
	unprivRegistryEnv = "BOXLITE_E2E_UNPRIV_REGISTRY"
	nobody            = "65534"
)

// TestImageOwnersUnprivileged runs the runtime as an unprivileged user
// (nobody): it cannot chown or mknod while unpacking, so the image's
// owners, modes and device nodes must reach the box's disk another way.
func TestImageOwnersUnprivileged(t *testing.T) {
	if host := os.Getenv(unprivRegistryEnv); host != "" {
		unprivilegedOwners(t, host)
		return
	}
	requireVM(t)
	setpriv, err := exec.LookPath("setpriv")
	switch {
	case os.Geteuid() != 0:
		prereq(t, "running as an unprivileged user needs root to switch to it")
	case err != nil:
		prereq(t, "setpriv not in PATH: apt-get install util-linux")
	}
	host, stop := serveImage(t, "test/owned:v1")
	defer stop()

	// Everything nobody needs, in a directory it can read: copies of this
	// test binary and of the agent, and a home and TMPDIR of its own.
	dir, err := os.MkdirTemp("", "boxlite-e2e-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	testBin := filepath.Join(dir, "e2e.test")
	agent := filepath.Join(dir, "boxlite-agent")
	copyFile(t, self, testBin)
	copyFile(t, agentPath, agent)
	home, tmp := filepath.Join(dir, "home"), filepath.Join(dir, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--reuid="+nobody, "--regid="+nobody, "--clear-groups",
		"--pdeathsig=KILL", "--",
		testBin, "-test.run=^TestImageOwnersUnprivileged$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(),
		unprivRegistryEnv+"="+host,
		"HOME="+home, "TMPDIR="+tmp, "BOXLITE_HOME=",
		"BOXLITE_AGENT="+agent, "BOXLITE_TEST_ROOTFS="+rootfsPath)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestImageOwnersUnprivileged") {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
	t.Logf("unprivileged run:\n%s", out)
}

// unprivilegedOwners is the part run as nobody.
func unprivilegedOwners(t *testing.T, host string) {
	requireVM(t)
	if os.Geteuid() == 0 {
		t.Fatal("the unprivileged half runs as root")
	}
	rt := newRuntime(t, boxlite.Options{
		HomeDir:         filepath.Join(os.Getenv("HOME"), "boxlite"),
		ImageRegistries: []boxlite.Registry{{Host: host, Insecure: true}},
	})
	box, err := rt.Create(context.Background(), boxlite.BoxOptions{Image: "test/owned:v1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := box.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ script, want string }{
		{"stat -c %u:%g /data/owned", "1000:1000"},
		{"stat -c %a /data/owned", "640"},
		{"stat -c %u:%g /bin/busybox /etc/passwd /", "0:0\n0:0\n0:0"},
		{"stat -c '%u:%g %a' /home/user", "1000:1000 755"},
		{"stat -c %a /tmp /root", "1777\n700"},
		{"stat -c '%F %t:%T %a' /data/null", "character special file 1:3 666"},
		{"test -e /etc/issue || echo gone", "gone"},
	} {
		r := run(t, box, sh(tc.script))
		if got := strings.TrimSpace(r.stdout); got != tc.want || r.res.ExitCode != 0 {
			t.Errorf("%s: %q (exit %d, %s), want %q", tc.script, got, r.res.ExitCode, r.stderr, tc.want)
		}
	}
}

// prereq skips the test naming the missing prerequisite, or fails it in CI.
func prereq(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("missing prerequisite in CI: " + reason)
	}
	t.Skip("missing prerequisite: " + reason)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
