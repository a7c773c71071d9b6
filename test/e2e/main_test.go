// Package e2e boots real boxes (QEMU VMs; software emulation where there is
// no /dev/kvm) and checks the public API end to end.
//
// Prerequisites: qemu-system-x86_64, qemu-img, mkfs.ext4, a Debian cloud
// kernel, a static busybox (scripts/install-deps.sh installs them all). The
// guest agent and the busybox root filesystem are built here unless
// BOXLITE_AGENT and BOXLITE_TEST_ROOTFS point at them. The registry tests
// need the OCI layouts scripts/build-test-images.sh writes, named by
// BOXLITE_TEST_IMAGES (make e2e builds them). With CI=true a
// missing prerequisite fails the run; elsewhere the tests are skipped with
// the missing piece named.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

var (
	agentPath  string
	rootfsPath string
	skipReason string
)

func TestMain(m *testing.M) {
	if home := os.Getenv(victimEnv); home != "" {
		agentPath, rootfsPath = os.Getenv("BOXLITE_AGENT"), os.Getenv("BOXLITE_TEST_ROOTFS")
		runVictim(home)
		return
	}
	code := func() int {
		tmp, err := os.MkdirTemp("", "boxlite-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if err := prepare(tmp); err != nil {
			if os.Getenv("CI") == "true" {
				fmt.Fprintln(os.Stderr, "e2e: missing prerequisite in CI:", err)
				return 1
			}
			skipReason = err.Error()
		}
		code := m.Run()
		shutdownShared()
		return code
	}()
	os.Exit(code)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

func prepare(tmp string) error {
	for _, bin := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not in PATH (run scripts/install-deps.sh)", bin)
		}
	}
	agentPath = os.Getenv("BOXLITE_AGENT")
	if agentPath == "" {
		agentPath = filepath.Join(tmp, "boxlite-agent")
		cmd := exec.Command("go", "build", "-o", agentPath, "./cmd/boxlite-agent")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build agent: %v: %s", err, out)
		}
	}
	rootfsPath = os.Getenv("BOXLITE_TEST_ROOTFS")
	if rootfsPath == "" {
		cmd := exec.Command("./scripts/busybox-rootfs.sh", filepath.Join(tmp, "rootfs"))
		cmd.Dir = repoRoot()
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("build busybox rootfs: %v", err)
		}
		rootfsPath = strings.TrimSpace(string(out))
	}
	return nil
}

func requireVM(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip("e2e prerequisite missing: " + skipReason)
	}
}

// newHome returns a fresh home dir, removed at cleanup. Its path is short,
// unlike t.TempDir's, which carries the test's name: a home too long for
// unix socket paths puts its boxes' sockets under a directory of the
// system's temp dir that outlives the test (see store.Layout.RunDir).
func newHome(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newRuntime opens a runtime on a fresh home dir, shut down at cleanup.
func newRuntime(t testing.TB, opts boxlite.Options) *boxlite.Runtime {
	t.Helper()
	requireVM(t)
	if opts.HomeDir == "" {
		opts.HomeDir = newHome(t)
	}
	if opts.AgentPath == "" {
		opts.AgentPath = agentPath
	}
	rt, err := boxlite.NewRuntime(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return rt
}

// startBox creates and starts a busybox box.
func startBox(t testing.TB, rt *boxlite.Runtime, opts boxlite.BoxOptions) *boxlite.Box {
	t.Helper()
	if opts.Rootfs == "" {
		opts.Rootfs = rootfsPath
	}
	ctx := context.Background()
	box, err := rt.Create(ctx, opts, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := box.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return box
}

var shared struct {
	once sync.Once
	rt   *boxlite.Runtime
	box  *boxlite.Box
	err  error
	home string
}

// sharedBox is one running box reused by the exec tests, to keep the number
// of boots (about two seconds each under emulation) down.
func sharedBox(t *testing.T) *boxlite.Box {
	t.Helper()
	requireVM(t)
	shared.once.Do(func() {
		shared.home, shared.err = os.MkdirTemp("", "boxlite-e2e-home-")
		if shared.err != nil {
			return
		}
		shared.rt, shared.err = boxlite.NewRuntime(boxlite.Options{HomeDir: shared.home, AgentPath: agentPath})
		if shared.err != nil {
			return
		}
		ctx := context.Background()
		shared.box, shared.err = shared.rt.Create(ctx, boxlite.BoxOptions{
			Rootfs: rootfsPath,
			Env:    []string{"BOX_LEVEL=box"},
			CPUs:   2,
		}, "shared")
		if shared.err == nil {
			shared.err = shared.box.Start(ctx)
		}
	})
	if shared.err != nil {
		t.Fatalf("shared box: %v", shared.err)
	}
	return shared.box
}

func shutdownShared() {
	if shared.rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_ = shared.rt.Shutdown(ctx)
		cancel()
	}
	if shared.home != "" {
		os.RemoveAll(shared.home)
	}
	if netRootfs.dir != "" {
		os.RemoveAll(filepath.Dir(netRootfs.dir))
	}
}

// qemuRunning reports whether a QEMU process of the box with this id lives.
func qemuRunning(id string) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), "boxlite-"+id) && strings.Contains(string(cmdline), "qemu") {
			return true
		}
	}
	return false
}
