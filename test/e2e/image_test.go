package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/boxlite-go/boxlite"
)

// dirLayer tars the tree at dir, owners and modes as on disk.
func dirLayer(t *testing.T, dir string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr.Name = rel
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return tarLayer(t, buf.Bytes())
}

func tarLayer(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ownedLayer adds /data/owned, owned by 1000:1000 with mode 0640, and the
// character device /data/null (1:3), and deletes /etc/issue with a
// whiteout.
func ownedLayer(t *testing.T) v1.Layer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "data/owned", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000, Size: 3})
	tw.Write([]byte("hi\n"))
	tw.WriteHeader(&tar.Header{Name: "data/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3})
	tw.WriteHeader(&tar.Header{Name: "etc/.wh.issue", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	return tarLayer(t, buf.Bytes())
}

// serveImage pushes a busybox image built from the test rootfs to a
// registry served on 127.0.0.1 and returns the registry's host:port.
func serveImage(t *testing.T, repo string) (host string, stop func()) {
	t.Helper()
	srv := httptest.NewServer(registry.New())
	host = strings.TrimPrefix(srv.URL, "http://")
	img, err := mutate.AppendLayers(empty.Image, dirLayer(t, rootfsPath), ownedLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IMG_VAR=from-image"}
	cf.Config.WorkingDir = "/home/user"
	cf.Config.Cmd = []string{"sh", "-c", "echo default-cmd $IMG_VAR $(pwd)"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return host, srv.Close
}

func TestImageBox(t *testing.T) {
	requireVM(t)
	host, stop := serveImage(t, "test/busybox:v1")
	defer stop()
	rt := newRuntime(t, boxlite.Options{ImageRegistries: []boxlite.Registry{{Host: host, Insecure: true}}})
	ctx := context.Background()

	box, err := rt.Create(ctx, boxlite.BoxOptions{Image: "test/busybox:v1"}, "img")
	if err != nil {
		t.Fatal(err)
	}
	if got := box.Info().Image; got != host+"/test/busybox:v1" {
		t.Errorf("info image %q", got)
	}
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	main, err := box.Command()
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, box, main); r.stdout != "default-cmd from-image /home/user\n" {
		t.Errorf("image Cmd/Env/WorkingDir: %q", r.stdout)
	}
	if r := run(t, box, sh("stat -c '%u:%g %a' /data/owned; test -e /etc/issue && echo issue-present; exit 0")); r.stdout != "1000:1000 640\n" {
		t.Errorf("layered files: %q", r.stdout)
	}

	// Box options override the image config.
	box2, err := rt.Create(ctx, boxlite.BoxOptions{Image: "test/busybox:v1", Env: []string{"IMG_VAR=from-box"}, WorkingDir: "/tmp", DiskSizeGB: 20}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := box2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	main, _ = box2.Command()
	if r := run(t, box2, main); r.stdout != "default-cmd from-box /tmp\n" {
		t.Errorf("box overrides: %q", r.stdout)
	}
	// The 10 GiB image base grew to the box's 20 GB disk.
	if r := run(t, box2, sh("df -k / | tail -1 | awk '{print $2}'")); !strings.HasPrefix(r.stdout, "20") || len(strings.TrimSpace(r.stdout)) != 8 {
		t.Errorf("root filesystem of a 20 GB box: %q KiB", r.stdout)
	}
	if main, _ := box2.Command("echo", "args"); main.Name != "echo" || len(main.Args) != 1 {
		t.Errorf("command with args: %+v", main)
	}

	// Cached: a create with the registry gone pulls nothing.
	stop()
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Image: "test/busybox:v1"}, ""); err != nil {
		t.Fatalf("create from the cache: %v", err)
	}
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Image: "test/other:v1"}, ""); !errors.Is(err, boxlite.ErrImage) {
		t.Errorf("registry down: %v, want ErrImage", err)
	}
}

func TestImageErrors(t *testing.T) {
	requireVM(t)
	host, stop := serveImage(t, "test/busybox:v1")
	defer stop()
	rt := newRuntime(t, boxlite.Options{ImageRegistries: []boxlite.Registry{{Host: host, Insecure: true}}})
	ctx := context.Background()
	for _, ref := range []string{"test/busybox:nope", "test/missing:v1"} {
		_, err := rt.Create(ctx, boxlite.BoxOptions{Image: ref}, "")
		if !errors.Is(err, boxlite.ErrImage) || !errors.Is(err, boxlite.ErrNotFound) || !strings.Contains(err.Error(), ref) {
			t.Errorf("%s: %v, want ErrImage+ErrNotFound naming the reference", ref, err)
		}
	}
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Image: "UPPER/Case::bad"}, ""); !errors.Is(err, boxlite.ErrImage) {
		t.Errorf("malformed reference: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(rt.HomeDir(), "boxes"))
	if len(entries) != 0 {
		t.Errorf("failed creates left %d box dirs", len(entries))
	}

	// Prune keeps what a box uses, and removes the rest.
	box, err := rt.Create(ctx, boxlite.BoxOptions{Image: "test/busybox:v1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if removed, err := rt.PruneImages(ctx); err != nil || len(removed) != 0 {
		t.Fatalf("prune with a box using the image: %v %v", removed, err)
	}
	if imgs, _ := rt.Images(ctx); len(imgs) != 1 {
		t.Fatalf("images after prune: %+v", imgs)
	}
	if err := rt.Remove(ctx, box.ID(), false); err != nil {
		t.Fatal(err)
	}
	if removed, err := rt.PruneImages(ctx); err != nil || len(removed) != 1 {
		t.Fatalf("prune without users: %v %v", removed, err)
	}
	if imgs, _ := rt.Images(ctx); len(imgs) != 0 {
		t.Fatalf("images after prune: %+v", imgs)
	}
	if bases, _ := filepath.Glob(filepath.Join(rt.HomeDir(), "bases", "*")); len(bases) != 0 {
		t.Fatalf("base disks left: %v", bases)
	}
}

func TestCLIImage(t *testing.T) {
	bin := buildCLI(t)
	host, stop := serveImage(t, "test/busybox:v1")
	defer stop()
	home := newHome(t)
	cli := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"--home", home, "--insecure-registry", host}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := cli("pull", "test/busybox:v1"); code != 0 || !strings.Contains(out, host+"/test/busybox:v1@sha256:") {
		t.Fatalf("pull: %d %s", code, out)
	}
	if out, code := cli("images"); code != 0 || !strings.Contains(out, host+"/test/busybox:v1") {
		t.Fatalf("images: %d %s", code, out)
	}
	if out, code := cli("run", "--rm", "test/busybox:v1"); code != 0 || out != "default-cmd from-image /home/user\n" {
		t.Fatalf("run default: %d %q", code, out)
	}
	if out, code := cli("run", "--rm", "test/busybox:v1", "sh", "-c", "exit 5"); code != 5 {
		t.Fatalf("run cmd: %d %q", code, out)
	}
	if out, code := cli("rmi", "test/busybox:v1"); code != 0 {
		t.Fatalf("rmi: %d %s", code, out)
	}
	if out, code := cli("images"); code != 0 || strings.Contains(out, "busybox") {
		t.Fatalf("images after rmi: %d %s", code, out)
	}
	if out, code := cli("pull", "-q", "test/busybox:v1"); code != 0 {
		t.Fatalf("pull again: %d %s", code, out)
	}
	if out, code := cli("image", "prune"); code != 0 || !strings.Contains(out, host+"/test/busybox:v1") {
		t.Fatalf("image prune: %d %s", code, out)
	}
}
