// Package registrytest runs Debian's docker-registry (CNCF distribution)
// on a free 127.0.0.1 port for tests and benchmarks, and pushes OCI
// layouts to it. The registry is tied to its starter with Pdeathsig.
package registrytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ErrMissing means docker-registry is not installed.
var ErrMissing = errors.New("docker-registry not in PATH: apt-get install docker-registry (scripts/install-deps.sh)")

// Registry is a running docker-registry.
type Registry struct {
	Host   string // 127.0.0.1:port
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs a registry storing its data under dir.
func Start(dir string) (*Registry, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, ErrMissing
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	host := l.Addr().String()
	l.Close()
	config := filepath.Join(dir, "config.yml")
	err = os.WriteFile(config, []byte(fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "storage"), host)), 0o600)
	if err != nil {
		return nil, err
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", config)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &Registry{Host: host, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(r.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		select {
		case <-r.exited:
			return nil, fmt.Errorf("docker-registry exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("docker-registry not answering on %s: %v: %s", host, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the registry and waits for it.
func (r *Registry) Stop() {
	r.cmd.Process.Kill()
	<-r.exited
}

// PushLayout pushes the image tagged tag in the OCI layout at dir to
// host/repo:tag.
func PushLayout(host, dir, repo, tag string) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	var img v1.Image
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == tag {
			if img, err = idx.Image(d.Digest); err != nil {
				return err
			}
		}
	}
	if img == nil {
		return fmt.Errorf("%s: no image tagged %s", dir, tag)
	}
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}
