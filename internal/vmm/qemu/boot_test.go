package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/boxlite-go/boxlite/internal/kernel"
	"github.com/boxlite-go/boxlite/internal/vmm"
)

// Boot tests run real QEMU machines. They need qemu-system-x86_64 and a
// Debian cloud kernel (kernel.Locate); without them they skip, or fail
// when CI=true. They use TCG unless BOXLITE_TEST_ACCEL says otherwise
// ("" = detect): an openable /dev/kvm does not always boot guests.
//
// BOXLITE_QEMU_MEASURE=1 also runs the boot-time and boot-loop
// measurements (a few minutes under TCG).

var assetsDir string // shared by the tests of one run

func TestMain(m *testing.M) {
	if os.Getenv("BOXLITE_TEST_OWNER_DIR") != "" {
		// TestOwnerHelper gets its assets from its parent and may be
		// killed: it creates nothing to clean up.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "qemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	assetsDir = dir
	code := m.Run()
	if os.Getenv("BOXLITE_TEST_KEEP") == "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// missing skips the test for a missing prerequisite, or fails it when
// CI=true.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and a prerequisite is missing: %s", msg)
	}
	t.Skip(msg)
}

// bootAssets are the kernels and initramfs of the boot tests.
type bootAssets struct {
	vmlinux string // PVH ELF, boots microvm
	bzImage string // boots q35
	initrd  string // testdata/init as /init, plus /modules
	// modules lists the loadable modules in the initrd, by name.
	modules map[string]bool
}

var (
	assetsOnce sync.Once
	assets     bootAssets
	assetsErr  error
	assetsMiss string
)

// requireBoot returns the boot assets, skipping (or failing under CI)
// when QEMU or a kernel is missing.
func requireBoot(t testing.TB) bootAssets {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM; -short given")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("boot tests need linux/amd64, this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if _, err := exec.LookPath(Binary); err != nil {
		missing(t, "%s not in $PATH: apt-get install qemu-system-x86", Binary)
	}
	assetsOnce.Do(func() { assets, assetsMiss, assetsErr = buildAssets() })
	if assetsMiss != "" {
		missing(t, "%s", assetsMiss)
	}
	if assetsErr != nil {
		t.Fatal(assetsErr)
	}
	return assets
}

// buildAssets extracts the vmlinux, builds the test init and packs the
// initramfs. miss names a missing prerequisite.
func buildAssets() (a bootAssets, miss string, err error) {
	k, err := kernel.Locate("")
	if err != nil {
		return a, fmt.Sprintf("no guest kernel (%v): %s", err, kernel.InstallHint), nil
	}
	a.bzImage = k.Path
	if a.vmlinux, err = kernel.Prepare(context.Background(), k, assetsDir); err != nil {
		return a, "", err
	}
	if _, err := exec.LookPath("go"); err != nil {
		return a, "the go command is not in $PATH (needed to build the test init)", nil
	}
	initBin := filepath.Join(assetsDir, "init")
	build := exec.Command("go", "build", "-trimpath", "-o", initBin, "./testdata/init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return a, "", fmt.Errorf("build test init: %v\n%s", err, out)
	}
	initData, err := os.ReadFile(initBin)
	if err != nil {
		return a, "", err
	}
	files := []cpioFile{{name: "init", mode: 0o100755, data: initData}, {name: "modules", mode: 0o40755}}
	a.modules = map[string]bool{}
	want := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk", "virtio_console"}
	filepath.WalkDir(filepath.Join(k.ModulesDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		name := strings.TrimSuffix(d.Name(), ".ko")
		if name == d.Name() || !slices.Contains(want, name) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		files = append(files, cpioFile{name: "modules/" + d.Name(), mode: 0o100644, data: data})
		a.modules[name] = true
		return nil
	})
	a.initrd = filepath.Join(assetsDir, "initrd.cpio")
	if err := os.WriteFile(a.initrd, newc(files), 0o644); err != nil {
		return a, "", err
	}
	return a, "", nil
}

// cpioFile is one member of a newc archive.
type cpioFile struct {
	name string
	mode uint32 // with the file type bits
	data []byte
}

// newc packs files into a cpio archive in the "newc" format the kernel
// unpacks into its initramfs.
func newc(files []cpioFile) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	write := func(ino int, f cpioFile) {
		nlink := 1
		if f.mode&0o40000 != 0 {
			nlink = 2
		}
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, f.mode, 0, 0, nlink, 0, len(f.data), 0, 0, 0, 0, len(f.name)+1, 0)
		b.WriteString(f.name)
		b.WriteByte(0)
		pad()
		b.Write(f.data)
		pad()
	}
	for i, f := range files {
		write(i+1, f)
	}
	write(0, cpioFile{name: "TRAILER!!!"})
	return b.Bytes()
}

// testAccel is the accelerator of the boot tests.
func testAccel() string {
	if a, ok := os.LookupEnv("BOXLITE_TEST_ACCEL"); ok {
		return a
	}
	return AccelTCG
}

// bootConfig is a machine config for a boot test.
func bootConfig(t testing.TB, kernelPath, initrd, mode string) vmm.Config {
	dir := t.TempDir()
	return vmm.Config{
		Name:       t.Name(),
		Dir:        dir,
		Kernel:     kernelPath,
		Initrd:     initrd,
		Cmdline:    "BOXLITE_TEST_MODE=" + mode,
		ConsoleLog: filepath.Join(dir, "console.log"),
		Accel:      testAccel(),
	}
}

// startMachine creates and starts a machine, and checks when the test
// ends that its QEMU is gone and that no goroutine leaked.
func startMachine(t *testing.T, cfg vmm.Config) *Machine {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("qemu pid %d: %s", m.PID(), strings.Join(Argv(m.Params()), " "))
	t.Cleanup(func() {
		m.Kill()
		assertNoQEMU(t, cfg.Dir)
		assertGoroutines(t, goroutines)
		if t.Failed() {
			if b, err := os.ReadFile(cfg.ConsoleLog); err == nil {
				t.Logf("console tail:\n%s", tailString(string(b), 3000))
			}
		}
	})
	return m
}

// waitDone waits for the machine to end.
func waitDone(t *testing.T, m *Machine, timeout time.Duration) {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(timeout):
		t.Fatalf("machine did not end within %v", timeout)
	}
}

// assertNoQEMU fails the test if a process runs whose command line names
// dir (where the machine's sockets are).
func assertNoQEMU(t testing.TB, dir string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(dir+"/")) {
			t.Errorf("process %s still runs: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// assertGoroutines fails the test if more goroutines run than before it,
// after giving them two seconds to end.
func assertGoroutines(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

func TestBootPanic(t *testing.T) {
	a := requireBoot(t)
	tests := []struct {
		name   string
		kernel string
		want   string // machine type
	}{
		{"microvm", a.vmlinux, MachineMicrovm},
		{"q35", a.bzImage, MachineQ35},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := startMachine(t, bootConfig(t, tt.kernel, a.initrd, "exit"))
			if got := m.Params().MachineType(); got != tt.want {
				t.Fatalf("machine type %q, want %q", got, tt.want)
			}
			waitDone(t, m, 120*time.Second)
			err := m.Err()
			if !errors.Is(err, errdefs.ErrGuestPanic) || !errors.Is(err, errdefs.ErrBoxDown) {
				t.Fatalf("Err() = %v, want ErrGuestPanic and ErrBoxDown", err)
			}
			if !strings.Contains(err.Error(), "Attempted to kill init") {
				t.Errorf("Err() = %q, want the panic line", err)
			}
			if !processGone(m.PID()) {
				t.Errorf("qemu pid %d still exists", m.PID())
			}
			if _, err := m.DialAgent(t.Context()); !errors.Is(err, errdefs.ErrGuestPanic) {
				t.Errorf("DialAgent() after the end = %v, want the machine's error", err)
			}
			if err := m.Stop(t.Context()); err != nil {
				t.Errorf("Stop() after the end = %v", err)
			}
		})
	}
}

func TestBootStopKill(t *testing.T) {
	a := requireBoot(t)
	tests := []struct {
		name    string
		end     func(*Machine) error
		wantErr func(error) bool
		want    string
	}{
		{"stop", func(m *Machine) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return m.Stop(ctx)
		}, func(err error) bool { return err == nil }, "nil"},
		{"stop with expired context kills", func(m *Machine) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return m.Stop(ctx)
		}, func(err error) bool { return err == nil }, "nil"},
		{"kill", (*Machine).Kill, func(err error) bool { return err == nil }, "nil"},
		{"external SIGKILL", func(m *Machine) error {
			if err := syscall.Kill(m.PID(), syscall.SIGKILL); err != nil {
				return err
			}
			<-m.Done()
			return nil
		}, func(err error) bool {
			return errors.Is(err, errdefs.ErrBoxDown) && strings.Contains(err.Error(), "qemu killed by signal 9")
		}, "ErrBoxDown, killed by signal 9"},
		{"external SIGTERM", func(m *Machine) error {
			if err := syscall.Kill(m.PID(), syscall.SIGTERM); err != nil {
				return err
			}
			<-m.Done()
			return nil
		}, func(err error) bool {
			return errors.Is(err, errdefs.ErrBoxDown) && strings.Contains(err.Error(), "host-signal")
		}, "ErrBoxDown, host-signal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := startMachine(t, bootConfig(t, a.vmlinux, a.initrd, "sleep"))
			if err := waitConsole(m, "boxlite-test-init: mode=sleep", 120*time.Second); err != nil {
				t.Fatal(err)
			}
			select {
			case <-m.Done():
				t.Fatalf("machine ended early: %v", m.Err())
			default:
			}
			if err := tt.end(m); err != nil {
				t.Fatalf("ending the machine: %v", err)
			}
			select {
			case <-m.Done():
			default:
				t.Fatal("Done not closed after the machine ended")
			}
			if err := m.Err(); !tt.wantErr(err) {
				t.Errorf("Err() = %v, want %s", err, tt.want)
			}
			if !processGone(m.PID()) {
				t.Errorf("qemu pid %d still exists", m.PID())
			}
		})
	}
}

// waitConsole waits until the console log holds s.
func waitConsole(m *Machine, s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(m.Params().ConsoleLog); bytes.Contains(b, []byte(s)) {
			return nil
		}
		select {
		case <-m.Done():
			return fmt.Errorf("machine ended before the console said %q: %v", s, m.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("console did not say %q within %v", s, timeout)
}

// TestBootDevices checks the disks (order, read-only, serial) and the
// agent port from inside the guest, then powers the guest off.
func TestBootDevices(t *testing.T) {
	a := requireBoot(t)
	tests := []struct {
		name    string
		kernel  string
		modules []string
	}{
		{"microvm", a.vmlinux, []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console"}},
		{"q35", a.bzImage, []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk", "virtio_console"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mods []string
			for _, mod := range tt.modules {
				if a.modules[mod] {
					mods = append(mods, mod)
				}
			}
			for _, need := range []string{"virtio_blk", "virtio_console"} {
				if !a.modules[need] {
					missing(t, "kernel module %s not found in the kernel's modules directory", need)
				}
			}
			cfg := bootConfig(t, tt.kernel, a.initrd, "devices")
			cfg.Cmdline += " BOXLITE_TEST_MODULES=" + strings.Join(mods, ",")
			rw := filepath.Join(cfg.Dir, "rw.raw")
			ro := filepath.Join(cfg.Dir, "ro.raw")
			if err := os.WriteFile(rw, make([]byte, 8<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(ro, make([]byte, 4<<20), 0o444); err != nil {
				t.Fatal(err)
			}
			cfg.Disks = []vmm.Disk{{Path: rw, Format: "raw"}, {Path: ro, Format: "raw", ReadOnly: true}}
			m := startMachine(t, cfg)

			ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
			defer cancel()
			conn, err := m.DialAgent(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// Unblock the reads below when time is up or the guest gives up
			// (its init then exits and the kernel panics).
			context.AfterFunc(ctx, func() { conn.Close() })
			go func() {
				select {
				case <-m.Done():
					conn.Close()
				case <-ctx.Done():
				}
			}()
			if _, err := io.WriteString(conn, "ping\n"); err != nil {
				t.Fatal(err)
			}
			var report []string
			sc := bufio.NewScanner(conn)
			for sc.Scan() && sc.Text() != "end" {
				report = append(report, sc.Text())
			}
			if err := sc.Err(); err != nil || ctx.Err() != nil {
				t.Fatalf("reading the report: %v %v %v (so far %q)", err, ctx.Err(), m.Err(), report)
			}
			want := []string{
				"disk vda serial=vda ro=0 sectors=16384",
				"disk vdb serial=vdb ro=1 sectors=8192",
			}
			if !slices.Equal(report, want) {
				t.Errorf("guest sees disks\n%s\nwant\n%s", strings.Join(report, "\n"), strings.Join(want, "\n"))
			}

			if _, err := io.WriteString(conn, "poweroff\n"); err != nil {
				t.Fatal(err)
			}
			waitDone(t, m, 60*time.Second)
			if err := m.Err(); err != nil {
				t.Errorf("Err() after a guest power-off = %v, want nil", err)
			}
		})
	}
}

func TestStartFailure(t *testing.T) {
	a := requireBoot(t)
	t.Run("qemu rejects its config", func(t *testing.T) {
		cfg := bootConfig(t, a.vmlinux, a.initrd, "sleep")
		bad := filepath.Join(cfg.Dir, "bad.qcow2")
		if err := os.WriteFile(bad, []byte("not a qcow2 image"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.Disks = []vmm.Disk{{Path: bad, Format: "qcow2"}}
		goroutines := runtime.NumGoroutine()
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = m.Start(t.Context())
		if err == nil || !strings.Contains(err.Error(), "qcow2") {
			t.Fatalf("Start() = %v, want QEMU's complaint about the qcow2 image", err)
		}
		t.Logf("Start() = %v", err)
		select {
		case <-m.Done():
		default:
			t.Error("Done not closed after a failed Start")
		}
		if m.Err() == nil {
			t.Error("Err() = nil after a failed Start")
		}
		assertNoQEMU(t, cfg.Dir)
		assertGoroutines(t, goroutines)
	})
	t.Run("context expires", func(t *testing.T) {
		cfg := bootConfig(t, a.vmlinux, a.initrd, "sleep")
		goroutines := runtime.NumGoroutine()
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		err = m.Start(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Start() = %v, want a deadline error", err)
		}
		<-m.Done()
		assertNoQEMU(t, cfg.Dir)
		assertGoroutines(t, goroutines)
	})
	t.Run("start twice", func(t *testing.T) {
		m := startMachine(t, bootConfig(t, a.vmlinux, a.initrd, "sleep"))
		if err := m.Start(t.Context()); !errors.Is(err, errdefs.ErrInvalidState) {
			t.Errorf("second Start() = %v, want ErrInvalidState", err)
		}
	})
}
