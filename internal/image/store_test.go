package image

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// testRegistry is an in-memory registry on 127.0.0.1 that counts blob
// GETs and can be told to misbehave.
type testRegistry struct {
	srv  *httptest.Server
	host string

	mu   sync.Mutex
	gets map[string]int // blob path -> GETs

	// hook, if set, serves a request instead of the registry; it returns
	// false to let the registry serve it.
	hook atomic.Pointer[func(w http.ResponseWriter, r *http.Request, next http.Handler) bool]
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{gets: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			tr.mu.Lock()
			tr.gets[r.URL.Path]++
			tr.mu.Unlock()
		}
		if h := tr.hook.Load(); h != nil && (*h)(w, r, reg) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	tr.host = strings.TrimPrefix(tr.srv.URL, "http://")
	return tr
}

func (tr *testRegistry) setHook(h func(w http.ResponseWriter, r *http.Request, next http.Handler) bool) {
	if h == nil {
		tr.hook.Store(nil)
		return
	}
	tr.hook.Store(&h)
}

func (tr *testRegistry) blobGets() map[string]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string]int{}
	for k, v := range tr.gets {
		out[k] = v
	}
	return out
}

func (tr *testRegistry) push(t *testing.T, repoTag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(tr.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
}

func (tr *testRegistry) registry() Registry { return Registry{Host: tr.host, Insecure: true} }

func randomImage(t *testing.T, cmd ...string) v1.Image {
	t.Helper()
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Cmd: cmd, Env: []string{"A=1"}, WorkingDir: "/w", User: "1:2", Entrypoint: []string{"/bin/sh", "-c"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func withPlatform(t *testing.T, img v1.Image, p v1.Platform) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func openStore(t *testing.T, dir string, regs ...Registry) *Store {
	t.Helper()
	s, err := Open(dir, Options{Registries: regs, Keychain: authn.NewMultiKeychain()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// assertEmptyCache checks that a failed pull left nothing behind.
func assertEmptyCache(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"refs", "tmp", "blobs/sha256"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s not empty: %v", sub, ents)
		}
	}
}

func TestPullAndCacheHit(t *testing.T) {
	tr := newTestRegistry(t)
	img := randomImage(t, "echo", "hi")
	tr.push(t, "app:v1", img)
	dir := t.TempDir()
	s := openStore(t, dir, tr.registry())

	var progress []Progress
	got, err := s.Pull(t.Context(), "app:v1", func(p Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, img) || got.Ref != tr.host+"/app:v1" || len(got.Layers) != 2 {
		t.Fatalf("pulled %+v", got)
	}
	want := Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo", "hi"}, Env: []string{"A=1"}, WorkingDir: "/w", User: "1:2"}
	if fmt.Sprint(got.Config) != fmt.Sprint(want) {
		t.Fatalf("config %+v, want %+v", got.Config, want)
	}
	if len(progress) == 0 || progress[len(progress)-1].Complete != progress[len(progress)-1].Total {
		t.Fatalf("progress %+v", progress)
	}

	tr.srv.Close() // a cache hit does no network I/O
	for _, ref := range []string{"app:v1", tr.host + "/app:v1"} {
		again, err := openStore(t, dir, tr.registry()).Pull(t.Context(), ref, nil)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if again.Digest != got.Digest {
			t.Fatalf("cache hit digest %s, want %s", again.Digest, got.Digest)
		}
	}
	imgs, err := s.List(t.Context())
	if err != nil || len(imgs) != 1 || imgs[0].Ref != got.Ref {
		t.Fatalf("List = %v, %v", imgs, err)
	}
}

func TestPullByDigestAndFallback(t *testing.T) {
	tr := newTestRegistry(t)
	img := randomImage(t)
	tr.push(t, "app:v1", img)
	down := httptest.NewServer(http.NotFoundHandler())
	downHost := strings.TrimPrefix(down.URL, "http://")
	down.Close()
	s := openStore(t, t.TempDir(), Registry{Host: downHost, Insecure: true}, tr.registry())
	got, err := s.Pull(t.Context(), "app@"+digestOf(t, img), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != tr.host+"/app@"+digestOf(t, img) {
		t.Fatalf("ref %s", got.Ref)
	}
}

func TestPullMultiArch(t *testing.T) {
	tr := newTestRegistry(t)
	var idx v1.ImageIndex = empty.Index
	for _, arch := range []string{"amd64", "arm64", "s390x"} {
		p := v1.Platform{OS: "linux", Architecture: arch}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        withPlatform(t, randomImage(t, "arch", arch), p),
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	ref, _ := name.ParseReference(tr.host + "/multi:1")
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	riscv := v1.Platform{OS: "linux", Architecture: "riscv64"}
	tr.push(t, "riscv:1", withPlatform(t, randomImage(t), riscv))

	tests := []struct {
		name     string
		ref      string
		platform string
		wantCmd  string
		err      error
	}{
		{"host platform", "multi:1", "", runtime.GOARCH, nil},
		{"explicit arm64", "multi:1", "linux/arm64", "arm64", nil},
		{"missing in index", "multi:1", "linux/ppc64le", "", ErrPlatformNotFound},
		{"single-arch other platform", "riscv:1", "linux/amd64", "", ErrPlatformNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{Registries: []Registry{tr.registry()}, Platform: tt.platform, Keychain: authn.NewMultiKeychain()})
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Pull(t.Context(), tt.ref, nil)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !errors.Is(err, errdefs.ErrImage) || !strings.Contains(err.Error(), tt.ref) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				assertEmptyCache(t, dir)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Config.Cmd) != 2 || got.Config.Cmd[1] != tt.wantCmd {
				t.Fatalf("picked %v (%s), want arch %s", got.Config.Cmd, got.Platform, tt.wantCmd)
			}
		})
	}
}

func basicAuth(user, pass string) func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if u, p, ok := r.BasicAuth(); ok && u == user && p == pass {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
}

// flipByte corrupts the body of GETs of blob digest.
func flipByte(digest string) func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
			return false
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		body[len(body)/2] ^= 0xff
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
		return true
	}
}

func TestPullErrors(t *testing.T) {
	tr := newTestRegistry(t)
	img := randomImage(t)
	tr.push(t, "app:v1", img)
	layers, _ := img.Layers()
	layerDigest, _ := layers[1].Digest()
	cf, _ := img.ConfigName()

	down := httptest.NewServer(http.NotFoundHandler())
	downHost := strings.TrimPrefix(down.URL, "http://")
	down.Close()

	tests := []struct {
		name string
		ref  string
		reg  Registry
		hook func(w http.ResponseWriter, r *http.Request, next http.Handler) bool
		err  error
		not  error
	}{
		{"unknown repository", "nope:v1", tr.registry(), nil, ErrImageNotFound, ErrTagNotFound},
		{"unknown tag", "app:v2", tr.registry(), nil, ErrTagNotFound, nil},
		{"registry down", "app:v1", Registry{Host: downHost, Insecure: true}, nil, ErrRegistryUnreachable, nil},
		{"server error", "app:v1", tr.registry(), func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
			w.WriteHeader(http.StatusNotImplemented)
			return true
		}, ErrRegistryUnreachable, nil},
		{"no credentials", "app:v1", tr.registry(), basicAuth("u", "p"), ErrImageUnauthorized, nil},
		{"wrong credentials", "app:v1", Registry{Host: tr.host, Insecure: true, Username: "u", Password: "bad"}, basicAuth("u", "p"), ErrImageUnauthorized, nil},
		{"corrupt layer", "app:v1", tr.registry(), flipByte(layerDigest.String()), ErrImageCorrupt, nil},
		{"corrupt config", "app:v1", tr.registry(), flipByte(cf.String()), ErrImageCorrupt, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr.setHook(tt.hook)
			defer tr.setHook(nil)
			dir := t.TempDir()
			_, err := openStore(t, dir, tt.reg).Pull(t.Context(), tt.ref, nil)
			if !errors.Is(err, tt.err) || !errors.Is(err, errdefs.ErrImage) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.not != nil && errors.Is(err, tt.not) {
				t.Fatalf("err = %v, must not be %v", err, tt.not)
			}
			if errors.Is(tt.err, ErrImageNotFound) != errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("err = %v: errdefs.ErrNotFound mismatch", err)
			}
			if !strings.Contains(err.Error(), tt.ref) {
				t.Fatalf("error %q does not name %q", err, tt.ref)
			}
			assertEmptyCache(t, dir)
		})
	}
}

func TestPullCredentials(t *testing.T) {
	tr := newTestRegistry(t)
	tr.push(t, "app:v1", randomImage(t))
	tr.setHook(basicAuth("u", "p"))

	t.Run("registry settings", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Registry{Host: tr.host, Insecure: true, Username: "u", Password: "p"})
		if _, err := s.Pull(t.Context(), "app:v1", nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("docker config file", func(t *testing.T) {
		cfgDir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("u:p"))
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, tr.host, auth)
		if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", cfgDir)
		s, err := Open(t.TempDir(), Options{Registries: []Registry{tr.registry()}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Pull(t.Context(), "app:v1", nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	tr := newTestRegistry(t)
	img := randomImage(t)
	tr.push(t, "app:v1", img)
	before := tr.blobGets()
	dir := t.TempDir()

	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One Store per goroutine, as separate processes would have.
			s := openStore(t, dir, tr.registry())
			_, errs[i] = s.Pull(t.Context(), "app:v1", nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	after := tr.blobGets()
	layers, _ := img.Layers()
	cf, _ := img.ConfigName()
	var blobs []string
	for _, l := range layers {
		d, _ := l.Digest()
		blobs = append(blobs, d.String())
	}
	blobs = append(blobs, cf.String())
	for _, b := range blobs {
		p := "/v2/app/blobs/" + b
		if n := after[p] - before[p]; n != 1 {
			t.Errorf("blob %s fetched %d times, want 1", b, n)
		}
	}
}

func TestInterruptedPull(t *testing.T) {
	tr := newTestRegistry(t)
	img := randomImage(t)
	tr.push(t, "app:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	// Serve half of the layer, then stall until the client goes away.
	tr.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, ld.String()) {
			return false
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	dir := t.TempDir()
	s := openStore(t, dir, tr.registry())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := s.Pull(ctx, "app:v1", func(p Progress) {
		if p.Digest == ld.String() && p.Complete > 0 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "app:v1") {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertEmptyCache(t, dir)

	tr.setHook(nil)
	got, err := s.Pull(t.Context(), "app:v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, img) {
		t.Fatalf("digest %s", got.Digest)
	}
}

func TestLocalSources(t *testing.T) {
	img := randomImage(t, "local")
	root := t.TempDir()

	ociDir := filepath.Join(root, "layout")
	p, err := layout.Write(ociDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{ociRefName: "v1"})); err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(root, "single")
	p2, err := layout.Write(single, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(root, "img.tar")
	if err := tarball.WriteToFile(archive, name.MustParseReference("example/app:1"), img); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		ref  string
		err  error
	}{
		{"oci layout with tag", "oci:" + ociDir + ":v1", nil},
		{"oci layout single image", "oci:" + single, nil},
		{"oci layout unknown tag", "oci:" + ociDir + ":v9", ErrTagNotFound},
		{"oci layout missing", "oci:" + filepath.Join(root, "nope"), ErrImageNotFound},
		{"docker archive", "docker-archive:" + archive, nil},
		{"docker archive missing", "docker-archive:" + filepath.Join(root, "nope.tar"), ErrImageNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			got, err := s.Pull(t.Context(), tt.ref, nil)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.ref) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				assertEmptyCache(t, dir)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Config.Cmd) != 1 || got.Config.Cmd[0] != "local" || len(got.Layers) != 2 {
				t.Fatalf("got %+v", got)
			}
			if _, err := Unpack(t.Context(), got, filepath.Join(t.TempDir(), "rootfs")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRemoveAndPrune(t *testing.T) {
	tr := newTestRegistry(t)
	a, b := randomImage(t, "a"), randomImage(t, "b")
	tr.push(t, "a:1", a)
	tr.push(t, "b:1", b)
	tr.push(t, "a:alias", a)
	dir := t.TempDir()
	s := openStore(t, dir, tr.registry())
	for _, ref := range []string{"a:1", "a:alias", "b:1"} {
		if _, err := s.Pull(t.Context(), ref, nil); err != nil {
			t.Fatal(err)
		}
	}
	countBlobs := func() int {
		ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
		return len(ents)
	}
	if n := countBlobs(); n != 8 { // 2 images x (manifest, config, 2 layers)
		t.Fatalf("%d blobs, want 8", n)
	}
	if err := s.Remove(t.Context(), "a:1"); err != nil {
		t.Fatal(err)
	}
	if n := countBlobs(); n != 8 {
		t.Fatalf("removing one of two refs freed blobs: %d", n)
	}
	if err := s.Remove(t.Context(), "a:1"); !errors.Is(err, ErrImageNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	bd := digestOf(t, b)
	removed, err := s.Prune(t.Context(), func(d string) bool { return d == bd })
	if err != nil || len(removed) != 1 || removed[0] != tr.host+"/a:alias" {
		t.Fatalf("Prune = %v, %v", removed, err)
	}
	if n := countBlobs(); n != 4 {
		t.Fatalf("%d blobs after prune, want 4", n)
	}
	if err := s.Remove(t.Context(), bd); err != nil {
		t.Fatal(err)
	}
	assertEmptyCache(t, dir)
}

func TestOpenBadPlatform(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{Platform: "nonsense"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err = %v", err)
	}
}

// TestHelperPullProcess is the child of TestConcurrentProcesses.
func TestHelperPullProcess(t *testing.T) {
	dir, host := os.Getenv("IMAGE_TEST_STORE"), os.Getenv("IMAGE_TEST_REGISTRY")
	if dir == "" {
		t.Skip("helper process only")
	}
	s := openStore(t, dir, Registry{Host: host, Insecure: true})
	if _, err := s.Pull(t.Context(), "app:v1", nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentProcesses(t *testing.T) {
	tr := newTestRegistry(t)
	img := randomImage(t)
	tr.push(t, "app:v1", img)
	before := tr.blobGets()
	// Slow the blobs down so the processes overlap.
	tr.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			time.Sleep(100 * time.Millisecond)
		}
		return false
	})
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for range 3 {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperPullProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "IMAGE_TEST_STORE="+dir, "IMAGE_TEST_REGISTRY="+tr.host)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	after := tr.blobGets()
	total := 0
	for k, v := range after {
		total += v - before[k]
	}
	if total != 3 { // config + 2 layers, once each
		t.Fatalf("%d blob GETs for 3 blobs across 3 processes: %v", total, after)
	}
}

func TestPullTLS(t *testing.T) {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewTLSServer(reg)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	ref, _ := name.ParseReference(host + "/app:v1")
	if err := remote.Write(ref, randomImage(t), remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		reg  Registry
		err  error
	}{
		{"skip verify", Registry{Host: host, SkipTLSVerify: true}, nil},
		{"unknown authority", Registry{Host: host}, ErrRegistryUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := openStore(t, dir, tt.reg).Pull(t.Context(), "app:v1", nil)
			if tt.err == nil && err != nil {
				t.Fatal(err)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				assertEmptyCache(t, dir)
			}
		})
	}
}
