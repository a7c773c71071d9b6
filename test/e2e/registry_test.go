package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
	"github.com/boxlite-go/boxlite/internal/registrytest"
)

// testImages returns the directory of OCI layouts that
// scripts/build-test-images.sh writes ($BOXLITE_TEST_IMAGES; make e2e
// builds and sets it).
func testImages(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("BOXLITE_TEST_IMAGES")
	if dir == "" {
		prereq(t, "BOXLITE_TEST_IMAGES not set: run scripts/build-test-images.sh DIR and set it to DIR (make e2e does)")
	}
	return dir
}

// startRegistry runs Debian's docker-registry (CNCF distribution) on a
// free port of 127.0.0.1 with its storage in a temporary directory, until
// the test ends (and no longer than this process), and returns host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	r, err := registrytest.Start(t.TempDir())
	if errors.Is(err, registrytest.ErrMissing) {
		prereq(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r.Host
}

// pushLayout pushes the image tagged v1 in the OCI layout at dir to
// host/repo:v1.
func pushLayout(t *testing.T, host, dir, repo string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		prereq(t, fmt.Sprintf("test image %s missing: run scripts/build-test-images.sh %s", dir, filepath.Dir(dir)))
	}
	if err := registrytest.PushLayout(host, dir, repo, "v1"); err != nil {
		t.Fatal(err)
	}
}

// registryBox pushes the test image name to a fresh registry and starts a
// box from it.
func registryBox(t *testing.T, image string) *boxlite.Box {
	t.Helper()
	requireVM(t)
	dir := filepath.Join(testImages(t), image)
	host := startRegistry(t)
	pushLayout(t, host, dir, "e2e/"+image)
	rt := newRuntime(t, boxlite.Options{ImageRegistries: []boxlite.Registry{{Host: host, Insecure: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	box, err := rt.Create(ctx, boxlite.BoxOptions{Image: "e2e/" + image + ":v1"}, image)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := box.Info().Image, host+"/e2e/"+image+":v1"; got != want {
		t.Errorf("info image %q, want %q", got, want)
	}
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return box
}

func TestRegistryBusyboxImage(t *testing.T) {
	box := registryBox(t, "busybox")
	main, err := box.Command()
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, main); r.stdout != "default-cmd from-image /home/user\n" || r.res.ExitCode != 0 {
		t.Errorf("image Cmd/Env/WorkingDir: %+v", r)
	}
	if r := run(t, box, sh("stat -c '%u:%g %a' /home/user /tmp; stat -c %Y /etc/issue")); r.stdout != "1000:1000 755\n0:0 1777\n1700000000\n" {
		t.Errorf("owners, modes, mtimes: %q %s", r.stdout, r.stderr)
	}
}

func TestRegistryPythonImage(t *testing.T) {
	box := registryBox(t, "python")
	if r := run(t, box, boxlite.Command{Name: "python3", Args: []string{"-c", "print(6*7)"}}); r.stdout != "42\n" || r.res.ExitCode != 0 {
		t.Errorf("python3: %+v", r)
	}
	main, err := box.Command()
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, main); r.stdout != "/srv hello-from-image\n" || r.res.ExitCode != 0 {
		t.Errorf("image Cmd/Env/WorkingDir: %+v", r)
	}
	r := run(t, box, sh(`. /etc/os-release; echo "$VERSION_CODENAME $(id -un) $PATH"`))
	if want := "bookworm root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"; r.stdout != want {
		t.Errorf("debian userland: %q %s, want %q", r.stdout, r.stderr, want)
	}
}
