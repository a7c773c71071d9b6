package boxlite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/boxlite-go/boxlite/internal/agent/client"
	"github.com/boxlite-go/boxlite/internal/image"
	"github.com/boxlite-go/boxlite/internal/initramfs"
	"github.com/boxlite-go/boxlite/internal/kernel"
	"github.com/boxlite-go/boxlite/internal/store"
	"github.com/boxlite-go/boxlite/internal/supervisor"
	"github.com/boxlite-go/boxlite/internal/vmm"
	"github.com/boxlite-go/boxlite/internal/vmm/qemu"
)

// machine is what a Box needs of its running VM: a supervisor handle.
type machine interface {
	DialAgent(ctx context.Context) (net.Conn, error)
	PID() int
	Done() <-chan struct{}
	Err() error
	Stop(ctx context.Context) error
	Kill() error
}

// Box is one micro-VM and its disk. Its methods are safe for concurrent
// use.
type Box struct {
	rt        *Runtime
	id, name  string
	opts      BoxOptions
	createdAt time.Time
	base      string        // image base disk; "" for a rootfs box
	layers    []string      // shared layer files in the disk's backing chain
	imported  bool          // the disk came from an archive: no base below it
	lastPause time.Duration // how long the VM was paused by the last live freeze
	owned     bool          // this process started the running VM (else attached)
	bootErr   string        // why the last Start failed
	// Defaults from the image config, under opts.
	imageEntrypoint, imageCmd []string

	attachMu   sync.Mutex // one attach at a time; taken without mu
	mu         sync.Mutex
	status     Status
	startedAt  time.Time
	stoppedAt  time.Time
	foreignPID int // VM pid of a box another process runs
	machine    machine
	agent      *client.Client
	runDir     string
	downErr    error         // why the VM ended unexpectedly
	ports      []PortMapping // resolved forwards of the running VM
	stopping   bool
	saved      bool // watch has stored the stopped state
}

func (b *Box) label() string {
	if b.name != "" {
		return fmt.Sprintf("%q", b.name)
	}
	return b.id
}

// ID is the box's unique id.
func (b *Box) ID() string { return b.id }

// Name is the box's name, possibly empty.
func (b *Box) Name() string { return b.name }

// Info returns a snapshot of the box's state.
func (b *Box) Info() BoxInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	info := BoxInfo{
		ID:              b.id,
		Name:            b.name,
		Status:          b.status,
		Image:           b.opts.Image,
		Rootfs:          b.opts.Rootfs,
		CPUs:            b.opts.CPUs,
		MemoryMiB:       b.opts.MemoryMiB,
		CreatedAt:       b.createdAt,
		StartedAt:       b.startedAt,
		LastFreezePause: b.lastPause,
		Network:         b.opts.Network,
		Ports:           append([]PortMapping(nil), b.opts.Ports...),
	}
	if b.status == StatusRunning && b.ports == nil && len(b.opts.Ports) > 0 {
		// Run by another process: its supervisor recorded the ports.
		if dir, err := b.rt.layout.RunDir(b.id); err == nil {
			b.ports = readPorts(dir)
		}
	}
	if b.status == StatusRunning && b.ports != nil {
		info.Ports = append([]PortMapping(nil), b.ports...)
	}
	if b.machine != nil && b.status == StatusRunning {
		info.PID = b.machine.PID()
	} else if b.machine == nil && b.status == StatusRunning {
		info.PID = b.foreignPID
	}
	if b.downErr != nil {
		info.Error = b.downErr.Error()
	} else if b.bootErr != "" {
		info.Error = "start failed: " + b.bootErr
	}
	b.mainInfo(&info)
	return info
}

// Start boots the box's VM and returns once its agent answers. A box that
// fails to boot is left stopped with no VM process.
func (b *Box) Start(ctx context.Context) error {
	b.mu.Lock()
	prev := b.status
	if prev != StatusConfigured && prev != StatusStopped {
		b.mu.Unlock()
		if prev == StatusRunning && b.machine == nil {
			return fmt.Errorf("box %s: start: box is running in another process (VM pid %d): %w", b.label(), b.foreignPID, ErrInvalidState)
		}
		return fmt.Errorf("box %s: start: box is %s: %w", b.label(), prev, ErrInvalidState)
	}
	b.status = StatusStarting
	b.mu.Unlock()

	// Claim the start in the store, so that two processes never boot one
	// box: the row must still say configured or stopped.
	_, err := b.rt.db.UpdateBox(context.WithoutCancel(ctx), b.id, func(r *store.Box) error {
		switch Status(r.Status) {
		case StatusConfigured, StatusStopped:
		default:
			return fmt.Errorf("box %s: start: box is %s (in another process): %w", b.label(), r.Status, ErrInvalidState)
		}
		r.Status, r.PID, r.StartedAt = string(StatusStarting), 0, time.Now()
		return nil
	})
	if err != nil {
		b.mu.Lock()
		b.status = prev
		b.mu.Unlock()
		return err
	}

	m, agent, runDir, err := b.boot(ctx)
	b.mu.Lock()
	if err != nil {
		b.status = prev
		b.downErr, b.bootErr = nil, err.Error()
		b.mu.Unlock()
		b.save(ctx)
		return fmt.Errorf("box %s: start: %w", b.label(), err)
	}
	b.status = StatusRunning
	b.startedAt = time.Now()
	b.machine, b.agent, b.runDir = m, agent, runDir
	b.ports = readPorts(runDir)
	b.downErr, b.bootErr = nil, ""
	b.stopping = false
	b.saved = false
	b.owned = true
	b.mu.Unlock()
	b.save(ctx)
	b.rt.watchers.Add(1)
	go b.watch(m, agent)
	return nil
}

func (b *Box) boot(ctx context.Context) (machine, *client.Client, string, error) {
	rt := b.rt
	vmlinux, initrd, err := rt.guestAssets(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	runDir, err := rt.layout.RunDir(b.id)
	if err != nil {
		return nil, nil, "", err
	}
	hostname := b.name
	if hostname == "" {
		hostname = b.id
	}
	mainProc, err := b.mainProcess()
	if err != nil {
		return nil, nil, "", err
	}
	cfg := supervisor.Config{
		Machine: vmm.Config{
			Name:       "boxlite-" + b.id,
			Dir:        runDir,
			Kernel:     vmlinux,
			Initrd:     initrd,
			Cmdline:    "boxlite.hostname=" + hostname,
			CPUs:       b.opts.CPUs,
			MemoryMiB:  b.opts.MemoryMiB,
			Disks:      []vmm.Disk{{Path: rt.layout.Overlay(b.id), Format: "qcow2"}},
			ConsoleLog: rt.layout.ConsoleLog(b.id),
			Accel:      rt.opts.Accel,
			TSCKHz:     rt.tscKHz(),
		},
		BootTimeout: DefaultBootTimeout,
		Home:        rt.opts.HomeDir,
		BoxID:       b.id,
		Network:     b.netConfig(),
		Main:        mainProc,
	}
	if cfg.Network != nil && cfg.Network.Slirp && len(cfg.Network.AllowNet) > 0 {
		return nil, nil, "", fmt.Errorf("BOXLITE_NET_BASELINE=slirp cannot enforce an allow-list: %w", ErrInvalidArgument)
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < cfg.BootTimeout {
		cfg.BootTimeout = time.Until(d)
	}
	h, err := supervisor.Start(ctx, cfg, b.opts.Detach)
	if err != nil {
		os.RemoveAll(runDir)
		return nil, nil, "", err
	}
	agent, err := client.Dial(ctx, h.DialAgent)
	if err != nil {
		_ = h.Kill()
		os.RemoveAll(runDir)
		return nil, nil, "", fmt.Errorf("box supervisor: %w", err)
	}
	return h, agent, runDir, nil
}

// watch marks the box stopped when its VM ends, keeping the reason when the
// end was not requested.
func (b *Box) watch(m machine, agent *client.Client) {
	defer b.rt.watchers.Done()
	select {
	case <-m.Done():
	case <-b.rt.stopWatching:
		// The runtime shuts down and leaves this box running (detached,
		// or run by another process): let go of it.
		b.mu.Lock()
		if b.machine == m {
			b.foreignPID = m.PID()
			b.machine, b.agent, b.owned = nil, nil, false
		}
		b.mu.Unlock()
		agent.Close()
		return
	}
	agent.Close()
	b.mu.Lock()
	if b.machine != m {
		b.mu.Unlock()
		return
	}
	if !b.stopping && (m.Err() != nil || !b.mainEnded()) {
		err := m.Err()
		if err == nil {
			err = errors.New("guest powered off")
		}
		b.downErr = fmt.Errorf("%w: %w", ErrBoxDown, err)
		b.rt.log.Warn("box went down", "box", b.id, "err", err)
	}
	b.status = StatusStopped
	b.stoppedAt = time.Now()
	b.machine, b.agent, b.ports = nil, nil, nil
	os.RemoveAll(b.runDir)
	b.mu.Unlock()
	b.save(context.Background())
	if b.opts.AutoRemove {
		if err := b.rt.removeBox(context.Background(), b, true); err != nil {
			b.rt.log.Warn("auto-remove", "box", b.id, "err", err)
		}
	}
	b.mu.Lock()
	b.saved = true
	b.mu.Unlock()
}

// running returns the agent and machine of a running box, or an error
// saying why there are none.
func (b *Box) running() (*client.Client, machine, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.status == StatusRunning && b.agent == nil {
		if err := b.attach(); err != nil {
			return nil, nil, fmt.Errorf("box %s: attach: %w", b.label(), err)
		}
	}
	if b.status != StatusRunning {
		if b.downErr != nil {
			return nil, nil, fmt.Errorf("box %s is %s: %w: %w", b.label(), b.status, ErrInvalidState, b.downErr)
		}
		return nil, nil, fmt.Errorf("box %s is %s: %w", b.label(), b.status, ErrInvalidState)
	}
	return b.agent, b.machine, nil
}

// Stop shuts the box down: the guest syncs and powers off; at ctx's
// deadline (or after 10 s without one) the VM is killed. Files written in
// the box are kept.
func (b *Box) Stop(ctx context.Context) error {
	b.mu.Lock()
	if b.status == StatusRunning && b.agent == nil {
		if err := b.attach(); err != nil {
			b.mu.Unlock()
			return fmt.Errorf("box %s: stop: %w", b.label(), err)
		}
	}
	if b.status != StatusRunning {
		st := b.status
		b.mu.Unlock()
		return fmt.Errorf("box %s: stop: box is %s: %w", b.label(), st, ErrInvalidState)
	}
	b.status = StatusStopping
	b.stopping = true
	m, agent := b.machine, b.agent
	b.mu.Unlock()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := agent.Shutdown(sctx)
	cancel()
	if err == nil {
		select {
		case <-m.Done():
		case <-ctx.Done():
		}
	}
	if err := m.Stop(ctx); err != nil {
		b.rt.log.Warn("stop", "box", b.id, "err", err)
	}
	<-m.Done()
	// watch() finishes the transition; wait for it so Info and the store
	// are settled.
	for {
		b.mu.Lock()
		done := b.machine != m && b.saved
		b.mu.Unlock()
		if done {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

func (b *Box) remove(ctx context.Context, force bool) error {
	b.mu.Lock()
	st, m, foreign := b.status, b.machine, b.foreignPID
	b.mu.Unlock()
	switch {
	case st == StatusStarting:
		return fmt.Errorf("box %s: remove: box is starting; stop it once it runs: %w", b.label(), ErrInvalidState)
	case st == StatusRunning || st == StatusStopping:
		if !force {
			return fmt.Errorf("box %s: remove: box is %s (stop it or force): %w", b.label(), st, ErrInvalidState)
		}
		if m != nil {
			b.mu.Lock()
			b.stopping = true
			b.mu.Unlock()
			_ = m.Kill()
		} else if foreign > 0 && qemuAlive(foreign, b.id) {
			// Run by another process: its VM goes; that process sees
			// the box go down.
			_ = syscall.Kill(foreign, syscall.SIGKILL)
		}
	}
	return nil
}

// guestAssets returns the PVH kernel and initramfs, preparing and caching
// them on first use.
func (rt *Runtime) guestAssets(ctx context.Context) (vmlinux, initrd string, err error) {
	rt.assetsMu.Lock()
	defer rt.assetsMu.Unlock()
	if rt.vmlinux != "" {
		return rt.vmlinux, rt.initrd, nil
	}
	k, err := kernel.Locate(rt.opts.Kernel)
	if err != nil {
		return "", "", err
	}
	vmlinux, err = kernel.Prepare(ctx, k, rt.layout.KernelCache())
	if err != nil {
		return "", "", err
	}
	agent, err := rt.agentPath()
	if err != nil {
		return "", "", err
	}
	initrd, err = initramfs.Build(ctx, initramfs.BuildOptions{
		AgentPath:   agent,
		ModulesDir:  k.ModulesDir,
		Modules:     initramfs.DefaultModules,
		LateModules: initramfs.DefaultLateModules,
		CacheDir:    rt.layout.InitramfsCache(),
	})
	if err != nil {
		return "", "", err
	}
	rt.vmlinux, rt.initrd = vmlinux, initrd
	return vmlinux, initrd, nil
}

// mergeEnv overlays extra K=V pairs on base, later keys winning.
func mergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	index := map[string]int{}
	for _, kv := range append(append([]string(nil), base...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// applyImageConfig makes the image's config the box's defaults where the
// box options say nothing, as docker does: Env merges (options win),
// WorkingDir and User are taken when unset.
func (b *Box) applyImageConfig(c image.Config) {
	b.opts.Env = mergeEnv(c.Env, b.opts.Env)
	if b.opts.WorkingDir == "" {
		b.opts.WorkingDir = c.WorkingDir
	}
	if b.opts.User == "" {
		b.opts.User = c.User
	}
	b.imageEntrypoint, b.imageCmd = c.Entrypoint, c.Cmd
}

// Command returns the box's main command the way docker run builds it:
// the entrypoint (BoxOptions.Entrypoint, else the image's) followed by args,
// or when args is empty by BoxOptions.Cmd, else the image's Cmd. A box
// without any of them answers ErrInvalidArgument.
func (b *Box) Command(args ...string) (Command, error) {
	entry := b.opts.Entrypoint
	if entry == nil {
		entry = b.imageEntrypoint
	}
	cmd := args
	if len(cmd) == 0 {
		cmd = b.opts.Cmd
		if cmd == nil && b.opts.Entrypoint == nil {
			cmd = b.imageCmd
		}
	}
	argv := append(append([]string(nil), entry...), cmd...)
	if len(argv) == 0 {
		return Command{}, fmt.Errorf("box %s: no command given and no entrypoint or cmd configured: %w", b.label(), ErrInvalidArgument)
	}
	return Command{Name: argv[0], Args: argv[1:]}, nil
}

// attach connects to the supervisor of a box another process started.
// b.mu is held on entry and on return, but not while dialing: a slow
// supervisor must not stall Info and List. attachMu keeps attaches one
// at a time.
func (b *Box) attach() error {
	for range 3 {
		pid := b.foreignPID
		b.mu.Unlock()
		b.attachMu.Lock()
		runDir, h, agent, err := b.dialSupervisor(pid)
		b.attachMu.Unlock()
		b.mu.Lock()
		switch {
		case b.agent != nil:
			// Attached (or started) by another call meanwhile.
			if agent != nil {
				agent.Close()
			}
			return nil
		case b.status != StatusRunning || b.foreignPID != pid:
			// The box moved on while we dialed: look again.
			if agent != nil {
				agent.Close()
			}
			if b.status != StatusRunning {
				return nil
			}
			continue
		case err != nil:
			if errors.Is(err, ErrBoxDown) {
				b.status, b.downErr = StatusStopped, err
			}
			return err
		}
		b.machine, b.agent, b.runDir = h, agent, runDir
		b.ports = readPorts(runDir)
		b.saved = false
		b.owned = false
		b.rt.watchers.Add(1)
		go b.watch(h, agent)
		return nil
	}
	return fmt.Errorf("box %s changed VM while attaching: %w", b.label(), ErrInvalidState)
}

// dialSupervisor connects to the agent of the VM qemuPID through its
// supervisor; b.mu must not be held.
func (b *Box) dialSupervisor(qemuPID int) (string, *supervisor.Handle, *client.Client, error) {
	runDir, err := b.rt.layout.RunDir(b.id)
	if err != nil {
		return "", nil, nil, err
	}
	h, err := supervisor.Attach(runDir, qemuPID)
	if err != nil {
		return "", nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, err := client.Dial(ctx, h.DialAgent)
	if err != nil {
		return "", nil, nil, err
	}
	return runDir, h, agent, nil
}

// readPorts returns the port forwards a box's supervisor resolved.
func readPorts(runDir string) []PortMapping {
	st, err := supervisor.ReadNetState(runDir)
	if err != nil || len(st.Ports) == 0 {
		return nil
	}
	out := make([]PortMapping, len(st.Ports))
	for i, p := range st.Ports {
		out[i] = portFromVnet(p)
	}
	return out
}

// ConsoleLogPath is the file holding the guest's serial console output
// (kernel messages and the agent's log) of the box's latest boot.
func (b *Box) ConsoleLogPath() string { return b.rt.layout.ConsoleLog(b.id) }

// tscKHz measures the host TSC frequency once per process (about 100 ms)
// and hands it to every supervisor, which would otherwise measure it at
// each start. 0 when unknown or not needed (KVM).
func (rt *Runtime) tscKHz() int {
	accel := rt.opts.Accel
	if accel == "" {
		accel = qemu.DetectAccel()
	}
	if accel != qemu.AccelTCG {
		return 0
	}
	khz, err := qemu.TSCKHz()
	if err != nil {
		return 0
	}
	return khz
}
