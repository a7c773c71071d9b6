package guest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

const (
	boxRoot         = "/box"
	modulesList     = "/etc/boxlite/modules"
	modulesDir      = "/lib/modules"
	defaultRootDev  = "/dev/vda"
	defaultHostname = "boxlite"
	rootDevWait     = 5 * time.Second
	transportWait   = 10 * time.Second
)

// bootParams are the agent's kernel command line parameters.
type bootParams struct {
	hostname string // boxlite.hostname=
	root     string // boxlite.root=: block device, or "none" for no box root
}

// parseCmdline reads boxlite.* parameters from a kernel command line.
func parseCmdline(cmdline string) bootParams {
	p := bootParams{hostname: defaultHostname, root: defaultRootDev}
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"`)
		switch k {
		case "boxlite.hostname":
			if v != "" {
				p.hostname = v
			}
		case "boxlite.root":
			if v != "" {
				p.root = v
			}
		}
	}
	return p
}

// Main is the agent's entry point as /init (PID 1). It sets the VM up,
// serves the host over virtio-serial (and vsock where available) and never
// returns. Setup failures are logged to the console and, where the agent
// can still serve, reported to the host through Exec; when no transport
// can be found the VM is powered off.
func Main() {
	ensureConsole()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if os.Getpid() != 1 {
		log.Warn("not running as PID 1; orphans will not be reaped by this agent")
	}
	ignoreSignals(log)

	for _, err := range mountBase() {
		log.Error("init: mount", "err", err)
	}
	if err := raiseTimerSlack(); err != nil {
		log.Error("init: timer slack", "err", err)
	}
	// Root's own group as its one supplementary group, as a box's root
	// usually has it: a process run as root then keeps the agent's
	// credentials instead of setting them anew (see credential).
	if err := syscall.Setgroups([]int{0}); err != nil {
		log.Error("init: groups", "err", err)
	}
	modules, err := os.ReadFile(modulesList)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Error("init: modules", "err", err)
	}
	early, late := parseModuleList(string(modules))
	drivers := &coldplug{
		devices: func(bus string) ([]string, error) { return deviceAliases("/sys", bus) },
		load:    func(f string) error { return loadModule(filepath.Join(modulesDir, f)) },
		log:     log,
	}
	drivers.run(early)
	if err := loopbackUp(); err != nil {
		log.Error("init: loopback up", "err", err)
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	params := parseCmdline(string(cmdline))
	if err := unix.Sethostname([]byte(params.hostname)); err != nil {
		log.Error("init: set hostname", "err", err)
	}

	root := boxRoot
	var setupErr error
	if params.root == "none" {
		root = ""
	} else if err := setupBox(params.root, boxRoot, log); err != nil {
		log.Error("init: box root", "err", err)
		setupErr = err
	}

	srv := NewServer(Config{
		Root:       root,
		ReapAll:    os.Getpid() == 1,
		PowerOff:   func(reboot bool) { powerOff(root, reboot, log) },
		SetupError: setupErr,
		Logger:     log,
	})
	serve := func(l net.Listener) {
		if err := srv.Serve(l); err != nil {
			log.Error("serve", "addr", l.Addr().String(), "err", err)
		}
	}
	port := openPort(log)
	if port != nil {
		go serve(port)
	}
	// Modules not needed to serve (network, entropy, vsock) load now, off
	// the boot's critical path; vsock is served once its driver is in.
	lateDone := make(chan struct{})
	go func() {
		defer close(lateDone)
		if err := disableIPv6ForNICs(); err != nil {
			log.Error("init: IPv6 off for NICs", "err", err)
		}
		drivers.run(late)
		if vsock := openVsock(log); vsock != nil {
			go serve(vsock)
		} else if port == nil {
			log.Error("init: no transport to the host (virtio-serial port or vsock); powering off")
			powerOff(root, false, log)
		}
	}()
	if port == nil {
		<-lateDone
	}
	log.Info("agent ready", "version", Version, "root", root)
	for {
		time.Sleep(time.Hour)
	}
}

// ensureConsole makes fds 0-2 the console if the kernel could not open it
// (an initramfs without /dev/console).
func ensureConsole() {
	var st unix.Stat_t
	if unix.Fstat(2, &st) == nil {
		return
	}
	_ = os.MkdirAll("/dev", 0o755)
	_ = unix.Mount("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755")
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := range 3 {
		_ = unix.Dup3(fd, i, 0)
	}
	if fd > 2 {
		unix.Close(fd)
	}
}

// ignoreSignals catches the signals whose default action would make the Go
// runtime exit, which as PID 1 panics the kernel. They are caught, not
// ignored, so that children (after exec) get default dispositions again.
func ignoreSignals(log *slog.Logger) {
	c := make(chan os.Signal, 8)
	signal.Notify(c, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
		unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE, unix.SIGALRM, unix.SIGPWR)
	go func() {
		for sig := range c {
			log.Info("init: ignoring signal", "signal", sig.String())
		}
	}()
}

// mount describes one mount; the target is created if missing.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func (m mount) do() error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return err
	}
	err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
	if errors.Is(err, unix.EBUSY) {
		return nil // already mounted (e.g. devtmpfs by the kernel)
	}
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

const nosuidNodevNoexec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// pseudoMounts are the mounts under a root (the agent's "/" or the box's).
func pseudoMounts(root string) []mount {
	j := func(p string) string { return filepath.Join(root, p) }
	return []mount{
		{"proc", j("/proc"), "proc", nosuidNodevNoexec, ""},
		{"sysfs", j("/sys"), "sysfs", nosuidNodevNoexec, ""},
		{"devtmpfs", j("/dev"), "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", j("/dev/pts"), "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", j("/dev/shm"), "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
}

// mountBase mounts the agent's own pseudo filesystems and /run.
func mountBase() []error {
	var errs []error
	ms := append(pseudoMounts("/"), mount{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"})
	for _, m := range ms {
		if err := m.do(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// setupBox mounts the box's root disk at root and the box's pseudo
// filesystems inside it.
func setupBox(dev, root string, log *slog.Logger) error {
	deadline := time.Now().Add(rootDevWait)
	for {
		if _, err := os.Stat(dev); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("root device %s did not appear within %v", dev, rootDevWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := setReadAhead(dev, diskReadAheadKB); err != nil {
		log.Warn("init: root disk read-ahead", "err", err)
	}
	if err := (mount{dev, root, "ext4", 0, "noinit_itable"}).do(); err != nil {
		return err
	}
	if err := growFS(dev, root); err != nil {
		log.Warn("init: grow root filesystem", "err", err)
	}
	for _, m := range pseudoMounts(root) {
		if err := m.do(); err != nil {
			log.Error("init: box mount", "err", err)
		}
	}
	if tmp := filepath.Join(root, "tmp"); !exists(tmp) {
		if err := os.Mkdir(tmp, 0o755); err == nil {
			_ = os.Chmod(tmp, 0o777|os.ModeSticky)
		}
	}
	ensureResolvConf(root, log)
	return nil
}

// diskReadAheadKB is the read-ahead of the box's disk. The kernel's 128 KiB
// default suits a physical disk; on a virtual one each request costs a
// round trip through the VMM, whatever its size. Measured under TCG: the
// first exec of busybox after boot (a 2 MB binary, 1.5 MB of it read)
// went from 15 major faults to a few and from 93 to 69 ms.
const diskReadAheadKB = 1024

// setReadAhead sets the read-ahead of block device dev (/dev/vda).
func setReadAhead(dev string, kb int) error {
	return os.WriteFile(filepath.Join("/sys/block", filepath.Base(dev), "queue/read_ahead_kb"), []byte(strconv.Itoa(kb)), 0)
}

// ensureResolvConf creates a placeholder /etc/resolv.conf in the box if it
// has none. An existing symlink (even dangling) is left alone: following it
// from outside the box would write to the agent's own filesystem.
func ensureResolvConf(root string, log *slog.Logger) {
	p := filepath.Join(root, "etc/resolv.conf")
	if exists(p) {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		log.Error("init: resolv.conf", "err", err)
		return
	}
	const placeholder = "# written by boxlite-agent; DNS is configured when networking is\n"
	if err := os.WriteFile(p, []byte(placeholder), 0o644); err != nil {
		log.Error("init: resolv.conf", "err", err)
	}
}

// exists reports whether p exists (a dangling symlink does).
func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// openVsock listens on vsock if the kernel has a vsock transport.
func openVsock(log *slog.Logger) net.Listener {
	cid, ok := vsockLocalCID()
	if !ok {
		return nil
	}
	log.Info("init: vsock", "cid", cid)
	l, err := listenVsock(pb.VsockPort)
	if err != nil {
		log.Warn("init: vsock", "err", err)
		return nil
	}
	return l
}

// vsockLocalCID returns the guest's vsock CID; ok is false when there is
// no guest-to-host vsock transport (/dev/vsock exists as soon as the vsock
// core is loaded, with or without a device).
func vsockLocalCID() (cid uint32, ok bool) {
	fd, err := unix.Open("/dev/vsock", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	cid, err = unix.IoctlGetUint32(fd, unix.IOCTL_VM_SOCKETS_GET_LOCAL_CID)
	return cid, err == nil && cid > 2 && cid != unix.VMADDR_CID_ANY
}

// openPort finds and opens the virtio-serial agent port, waiting for the
// device to be probed and named by the host.
func openPort(log *slog.Logger) net.Listener {
	deadline := time.Now().Add(transportWait)
	for {
		dev, err := findPort("/sys", pb.PortName)
		if err == nil {
			var f *os.File
			if f, err = os.OpenFile(dev, os.O_RDWR, 0); err == nil {
				log.Info("init: agent port", "dev", dev)
				return newPortListener(f, dev, log)
			}
		}
		if time.Now().After(deadline) {
			log.Warn("init: no virtio-serial agent port", "port", pb.PortName, "err", err)
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// powerOff stops the box's processes, syncs, unmounts the box and powers
// the VM off (or reboots it). It does not return.
func powerOff(root string, reboot bool, log *slog.Logger) {
	// kill(-1) from PID 1 reaches every process but init.
	_ = unix.Kill(-1, unix.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	if root != "" {
		unmountTree(root, log)
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	err := unix.Reboot(cmd)
	log.Error("init: reboot", "err", err)
	for {
		time.Sleep(time.Hour)
	}
}

// unmountTree unmounts everything at or under root, deepest first. The root
// filesystem is remounted read-only if it cannot be unmounted, so that it is
// clean when the VM stops.
func unmountTree(root string, log *slog.Logger) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		log.Error("init: unmount", "err", err)
		return
	}
	var targets []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		t := unescapeMount(f[1])
		if t == root || strings.HasPrefix(t, root+"/") {
			targets = append(targets, t)
		}
	}
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	targets = slices.Compact(targets)
	for _, t := range targets {
		if err := unix.Unmount(t, 0); err == nil {
			continue
		}
		if t == root {
			_ = unix.Mount("", t, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
		}
		_ = unix.Unmount(t, unix.MNT_DETACH)
	}
}

// unescapeMount decodes the octal escapes (\040 for space) of
// /proc/self/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, ok := octal3(s[i+1 : i+4]); ok {
				b.WriteByte(n)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal3(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var n int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		n = n*8 + int(c-'0')
	}
	return byte(n), n < 256
}

// ext4ResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64).
const ext4ResizeFS = 0x40086610

// growFS grows the ext4 filesystem mounted at root to fill its device dev,
// online: a box whose disk is larger than its image's base gets the space.
// The kernel does nothing when the sizes already match.
func growFS(dev, root string) error {
	d, err := os.Open(dev)
	if err != nil {
		return err
	}
	size, err := unix.IoctlGetUint64(int(d.Fd()), unix.BLKGETSIZE64)
	d.Close()
	if err != nil {
		return fmt.Errorf("device size: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return err
	}
	if st.Bsize <= 0 {
		return fmt.Errorf("block size %d", st.Bsize)
	}
	blocks := size / uint64(st.Bsize)
	r, err := os.Open(root)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, r.Fd(), ext4ResizeFS, uintptr(unsafe.Pointer(&blocks))); errno != 0 {
		return fmt.Errorf("resize to %d blocks: %w", blocks, errno)
	}
	return nil
}
