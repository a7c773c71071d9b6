// Command bench measures boot and exec latency of boxes against a raw QEMU
// baseline in the same run, and prints a markdown table.
//
//	go run ./bench -agent bin/boxlite-agent -rootfs .cache/rootfs/busybox
//	go run ./bench -images .cache/images -crane bin/crane   # image pipeline
//	go run ./bench -clone                                    # clone and export
//
// Rows:
//   - raw boot: QEMU started directly with the same argv (kernel,
//     initramfs, disk) until the agent answers Hello — no runtime code.
//     Twice: the same VM with its NIC (on QEMU's slirp, unused), which is
//     the box's VM, and without a NIC, which also leaves out the network
//     driver's load in the guest. Both power off cleanly, as a box stops.
//   - box boot to first exec: Box.Start, then Exec("true") and Wait.
//   - exec round trip: Exec("true") + Wait on a running box.
//   - the box's shell spawning true: a fork, exec and wait of the same
//     program by a process of the box, in rounds after the exec loop, each
//     right after a block of execs: the floor under an exec, which no agent
//     removes. The exec's ratio to it, paired per round, is what the box's
//     exec path adds; it moves less with the host's speed than the exec's
//     absolute time.
//   - guest CPU per exec: what the agent and its children used during the
//     exec loop, from the guest's /proc/1/stat. Under TCG the round trip is
//     mostly this.
//
// With -ab OTHER_AGENT it instead compares the exec of two guest agents
// (say, main's and a change's), one box each, execs interleaved, with the
// guest's CPU and context switches per exec:
//
//	git stash && make build && cp bin/boxlite-agent /tmp/agent-main && git stash pop
//	make build && go run ./bench -agent /tmp/agent-main -ab bin/boxlite-agent
//
// -ab-boots N adds N alternated boots (Start, exec true) of each box.
//
// With -series it runs -execs execs on one box and prints them in blocks
// of 20 over time, with the QEMU process's CPU per exec: how much the
// host's speed moves an exec within a run (see docs/BENCHMARKS.md).
//
// Boots alternate between the kinds, in rounds whose order rotates, so that
// drift in the machine's speed hits all equally; ratios are given both as
// the ratio of the medians and as the median of per-round ratios (paired),
// which that drift moves less.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/boxlite-go/boxlite"
	"github.com/boxlite-go/boxlite/internal/agent/client"
	"github.com/boxlite-go/boxlite/internal/disk"
	"github.com/boxlite-go/boxlite/internal/initramfs"
	"github.com/boxlite-go/boxlite/internal/kernel"
	"github.com/boxlite-go/boxlite/internal/store"
	"github.com/boxlite-go/boxlite/internal/vmm"
	"github.com/boxlite-go/boxlite/internal/vmm/qemu"
	"github.com/boxlite-go/boxlite/internal/vnet"
)

func main() {
	agent := flag.String("agent", "bin/boxlite-agent", "guest agent binary")
	rootfs := flag.String("rootfs", ".cache/rootfs/busybox", "root filesystem directory")
	boots := flag.Int("boots", 10, "boots of each kind")
	execs := flag.Int("execs", 200, "exec round trips")
	accel := flag.String("accel", "", "kvm, tcg or empty for auto")
	cpus := flag.Int("cpus", boxlite.DefaultCPUs, "vCPUs of the measured boxes")
	list := flag.Int("list", 100, "boxes in the home dir for the List benchmark")
	images := flag.String("images", "", "OCI layouts of scripts/build-test-images.sh: run the image benchmark instead")
	crane := flag.String("crane", "crane", "crane binary for the image baseline")
	clone := flag.Bool("clone", false, "run the clone/export benchmark instead")
	netb := flag.Bool("net", false, "run the network benchmark (against QEMU's slirp) instead")
	netMiB := flag.Int("net-mib", 32, "MiB per throughput transfer")
	ab := flag.String("ab", "", "another agent binary: compare its exec with -agent's instead")
	abBoots := flag.Int("ab-boots", 0, "with -ab, also compare this many boots of each")
	series := flag.Bool("series", false, "run -execs execs on one box and print them in blocks over time instead")
	flag.Parse()

	// Interrupted, the bench still stops its boxes and removes its temporary
	// homes: the benchmarks end with the context's error and their cleanups run.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	table := func(header string) {
		fmt.Println(header)
		fmt.Println("|---|---|---|---|---|")
	}
	var err error
	switch {
	case *series:
		err = seriesBench(ctx, *agent, *rootfs, *accel, *cpus, *execs)
	case *ab != "":
		err = abBench(ctx, [2]string{*agent, *ab}, *rootfs, *accel, *cpus, *execs, *abBoots)
	case *netb:
		table("| benchmark | n | median | baseline | ratio |")
		err = netBench(ctx, *agent, *rootfs, *accel, *netMiB, 5, 50)
	case *clone:
		table("| benchmark | n | median | p99 | ratio |")
		err = cloneBench(ctx, *agent, *rootfs, *accel)
	case *images != "":
		table("| benchmark | n | median | p99 | ratio |")
		err = imageBench(ctx, *images, *crane, 5)
	default:
		err = run(ctx, *agent, *rootfs, *accel, *cpus, *boots, *execs, *list)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, agent, rootfs, accel string, cpus, boots, execs, list int) error {
	agent, _ = filepath.Abs(agent)
	rootfs, _ = filepath.Abs(rootfs)
	rt, home, closeRT, err := tempRuntime(ctx, "boxlite-bench-", agent, accel)
	if err != nil {
		return err
	}
	defer closeRT()
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfs, CPUs: cpus}, "bench")
	if err != nil {
		return err
	}
	raw, err := newRawBooter(ctx, home, agent, rootfs, accel, cpus, false)
	if err != nil {
		return err
	}
	defer raw.close()
	rawNIC, err := newRawBooter(ctx, home, agent, rootfs, accel, cpus, true)
	if err != nil {
		return err
	}
	defer rawNIC.close()

	// Warm-up: one boot of each kind, not counted (page cache, asset caches).
	for _, r := range []*rawBooter{raw, rawNIC} {
		if _, err := r.boot(ctx); err != nil {
			return fmt.Errorf("raw boot: %w", err)
		}
	}
	if _, err := boxBoot(ctx, box); err != nil {
		return err
	}

	// Each round boots the three kinds back to back, in an order rotated
	// every round, so that neither the drift nor the position in the round
	// (what ran just before) favours one kind.
	rawT, rawNICT := make([]time.Duration, boots), make([]time.Duration, boots)
	boxT, startT := make([]time.Duration, boots), make([]time.Duration, boots)
	kinds := []func(i int) error{
		func(i int) (err error) {
			if rawT[i], err = raw.boot(ctx); err != nil {
				err = fmt.Errorf("raw boot %d: %w", i, err)
			}
			return err
		},
		func(i int) (err error) {
			if rawNICT[i], err = rawNIC.boot(ctx); err != nil {
				err = fmt.Errorf("raw boot with a NIC %d: %w", i, err)
			}
			return err
		},
		func(i int) error {
			t0 := time.Now()
			if err := box.Start(ctx); err != nil {
				return fmt.Errorf("box boot %d: %w", i, err)
			}
			startT[i] = time.Since(t0)
			if err := execTrue(ctx, box); err != nil {
				return err
			}
			boxT[i] = time.Since(t0)
			return box.Stop(ctx)
		},
	}
	for i := range boots {
		for k := range kinds {
			if err := kinds[(i+k)%len(kinds)](i); err != nil {
				return err
			}
		}
	}

	if err := box.Start(ctx); err != nil {
		return err
	}
	pingT, err := raw.pings(ctx, execs)
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	stats0, err := readGuestStats(ctx, box)
	if err != nil {
		return err
	}
	execT, err := timeExecs(ctx, box, execs)
	if err != nil {
		return err
	}
	stats1, err := readGuestStats(ctx, box)
	if err != nil {
		return err
	}
	// Then in rounds, each a block of execs right next to the box's shell
	// spawning true: the host's speed changes by up to 2x from one second
	// to the next, so each round's ratio pairs an exec median with a
	// floor of the same seconds.
	var spawnT, roundExecT []time.Duration
	for range spawnRounds {
		block, err := timeExecs(ctx, box, roundExecs)
		if err != nil {
			return err
		}
		d, err := guestSpawn(ctx, box)
		if err != nil {
			return err
		}
		roundExecT = append(roundExecT, pct(block, 50))
		spawnT = append(spawnT, d)
	}
	if err := box.Stop(ctx); err != nil {
		return err
	}

	for i := 1; i < list; i++ {
		if _, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfs}, fmt.Sprintf("list-%d", i)); err != nil {
			return err
		}
	}
	var listT []time.Duration
	for range 10 {
		t0 := time.Now()
		infos, err := rt.List(ctx)
		if err != nil {
			return err
		}
		listT = append(listT, time.Since(t0))
		if len(infos) != list {
			return fmt.Errorf("list: %d boxes, want %d", len(infos), list)
		}
	}

	rawMed, boxMed := pct(rawT, 50), pct(boxT, 50)
	fmt.Printf("accelerator: %s, %d vCPU, %s\n\n", raw.accel, cpus, time.Now().Format("2006-01-02"))
	fmt.Println("| benchmark | n | median | p99 | ratio |")
	fmt.Println("|---|---|---|---|---|")
	nicMed := pct(rawNICT, 50)
	fmt.Printf("| raw QEMU boot to agent Hello, the box's VM (NIC on slirp, unused): baseline | %d | %s | %s | 1.00 |\n", len(rawNICT), ms(nicMed), ms(pct(rawNICT, 99)))
	fmt.Printf("| raw QEMU boot to agent Hello, no NIC | %d | %s | %s | %.2f |\n", len(rawT), ms(rawMed), ms(pct(rawT, 99)), float64(rawMed)/float64(nicMed))
	fmt.Printf("| box boot to first exec (Start + exec true) | %d | %s | %s | %.2f |\n", len(boxT), ms(boxMed), ms(pct(boxT, 99)), float64(boxMed)/float64(nicMed))
	fmt.Printf("| Box.Start of a stopped box (to agent ready) | %d | %s | %s | %.2f |\n", len(startT), ms(pct(startT, 50)), ms(pct(startT, 99)), float64(pct(startT, 50))/float64(nicMed))
	fmt.Printf("| box boot to first exec / raw with NIC, paired (median of per-round ratios) | %d | | | %.2f |\n", len(boxT), pairedRatio(boxT, rawNICT))
	fmt.Printf("| box boot to first exec / raw without NIC, paired | %d | | | %.2f |\n", len(boxT), pairedRatio(boxT, rawT))
	fmt.Printf("| Box.Start / raw with NIC, paired | %d | | | %.2f |\n", len(startT), pairedRatio(startT, rawNICT))
	fmt.Printf("| Runtime.List over %d boxes | %d | %s | %s | |\n", list, len(listT), ms(pct(listT, 50)), ms(pct(listT, 99)))
	fmt.Printf("| exec round trip (exec true + wait), p50 | %d | %s | %s | |\n", len(execT), ms(pct(execT, 50)), ms(pct(execT, 99)))
	fmt.Printf("| exec round trip, p10 | %d | %s | | |\n", len(execT), ms(pct(execT, 10)))
	fmt.Printf("| the box's shell spawning true (fork, exec, wait), per process, median of rounds | %d | %s | | exec p50 / this: %.2f |\n", len(spawnT)*spawnLoop, ms(pct(spawnT, 50)), float64(pct(execT, 50))/float64(pct(spawnT, 50)))
	fmt.Printf("| exec round trip / the shell spawning true, paired (median of %d rounds: %d execs, then the shell's loops) | %d | | | %.2f |\n", spawnRounds, roundExecs, len(roundExecT)*roundExecs, pairedRatio(roundExecT, spawnT))
	fmt.Printf("| guest CPU per exec (agent + process, from /proc/1/stat), mean | %d | %s | | |\n", len(execT), ms((stats1.agent+stats1.children-stats0.agent-stats0.children)/time.Duration(len(execT))))
	fmt.Printf("| agent ping (Hello round trip), p50 | %d | %s | %s | |\n", len(pingT), ms(pct(pingT, 50)), ms(pct(pingT, 99)))
	return nil
}

// tempRuntime returns a runtime in a new temporary home directory; done
// shuts it down and removes the home.
func tempRuntime(ctx context.Context, prefix, agent, accel string) (rt *boxlite.Runtime, home string, done func(), err error) {
	home, err = os.MkdirTemp("", prefix)
	if err != nil {
		return nil, "", nil, err
	}
	rt, err = boxlite.NewRuntime(boxlite.Options{HomeDir: home, AgentPath: agent, Accel: accel})
	if err != nil {
		os.RemoveAll(home)
		return nil, "", nil, err
	}
	return rt, home, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		rt.Shutdown(sctx)
		os.RemoveAll(home)
	}, nil
}

// startedBox boots a box of rootfs in a runtime of its own, in a temporary
// home; done stops it and removes the home.
func startedBox(ctx context.Context, name, agent, rootfs, accel string, cpus int) (box *boxlite.Box, done func(), err error) {
	agent, _ = filepath.Abs(agent)
	rootfs, _ = filepath.Abs(rootfs)
	rt, _, closeRT, err := tempRuntime(ctx, "boxlite-bench-"+name+"-", agent, accel)
	if err != nil {
		return nil, nil, err
	}
	box, err = rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfs, CPUs: cpus}, name)
	if err == nil {
		err = box.Start(ctx)
	}
	if err != nil {
		closeRT()
		return nil, nil, err
	}
	return box, closeRT, nil
}

func boxBoot(ctx context.Context, box *boxlite.Box) (time.Duration, error) {
	t0 := time.Now()
	if err := box.Start(ctx); err != nil {
		return 0, err
	}
	if err := execTrue(ctx, box); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	return d, box.Stop(ctx)
}

// spawnLoop is how many processes the box's shell spawns per round, in
// spawnRounds rounds, each after roundExecs execs.
const (
	spawnLoop   = 20
	spawnRounds = 10
	roundExecs  = 20
)

// guestSpawn returns what one fork, exec and wait of true costs the box's
// own shell: a loop spawning it spawnLoop times, less the same loop
// without it, over spawnLoop. It is the part of an exec that no agent can
// remove, measured on this host at this minute.
func guestSpawn(ctx context.Context, box *boxlite.Box) (time.Duration, error) {
	loop := func(body string) (time.Duration, error) {
		script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done", spawnLoop, body)
		t0 := time.Now()
		ex, err := box.Exec(ctx, boxlite.Command{Name: "sh", Args: []string{"-c", script}})
		if err != nil {
			return 0, err
		}
		res, err := ex.Wait(ctx)
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("spawn loop exited %d", res.ExitCode)
		}
		return time.Since(t0), err
	}
	with, err := loop("/bin/true")
	if err != nil {
		return 0, err
	}
	without, err := loop(":")
	if err != nil {
		return 0, err
	}
	return max(with-without, 0) / spawnLoop, nil
}

// timeExecs returns the round trips of n execs of true, one after another.
func timeExecs(ctx context.Context, box *boxlite.Box, n int) ([]time.Duration, error) {
	ds := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if err := execTrue(ctx, box); err != nil {
			return nil, err
		}
		ds = append(ds, time.Since(t0))
	}
	return ds, nil
}

func execTrue(ctx context.Context, box *boxlite.Box) error {
	ex, err := box.Exec(ctx, boxlite.Command{Name: "true"})
	if err != nil {
		return err
	}
	res, err := ex.Wait(ctx)
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("true exited %d", res.ExitCode)
	}
	return err
}

// rawBooter starts QEMU by hand with the runtime's own argv.
type rawBooter struct {
	dir   string
	argv  []string
	sock  string
	accel string
}

func newRawBooter(ctx context.Context, home, agent, rootfs, accel string, cpus int, withNIC bool) (*rawBooter, error) {
	layout := store.Layout{Home: home}
	k, err := kernel.Locate("")
	if err != nil {
		return nil, err
	}
	vmlinux, err := kernel.Prepare(ctx, k, layout.KernelCache())
	if err != nil {
		return nil, err
	}
	initrd, err := initramfs.Build(ctx, initramfs.BuildOptions{AgentPath: agent, ModulesDir: k.ModulesDir, CacheDir: layout.InitramfsCache()})
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "boxlite-raw-")
	if err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "base.ext4")
	overlay := filepath.Join(dir, "disk.qcow2")
	if err := disk.BaseFromDir(ctx, rootfs, base, 10<<30); err != nil {
		return nil, err
	}
	if err := disk.Overlay(ctx, base, "raw", overlay, 0); err != nil {
		return nil, err
	}
	var nic *vmm.NIC
	if withNIC {
		nic = &vmm.NIC{Slirp: true, MAC: vnet.BoxMAC}
	}
	m, err := qemu.New(vmm.Config{
		Name: "boxlite-raw", Dir: dir, Kernel: vmlinux, Initrd: initrd,
		Cmdline: "boxlite.hostname=raw", CPUs: cpus, MemoryMiB: boxlite.DefaultMemoryMiB,
		Disks:      []vmm.Disk{{Path: overlay, Format: "qcow2"}},
		ConsoleLog: filepath.Join(dir, "console.log"), Accel: accel,
		NIC: nic,
	})
	if err != nil {
		return nil, err
	}
	p := m.Params()
	return &rawBooter{dir: dir, argv: qemu.Argv(p), sock: p.AgentSocket, accel: p.Accel + " " + p.MachineType()}, nil
}

// boot times one boot to the agent's Hello.
func (r *rawBooter) boot(ctx context.Context) (time.Duration, error) {
	d, _, err := r.bootWith(ctx, 0)
	return d, err
}

// pings boots once and times n agent Hello round trips.
func (r *rawBooter) pings(ctx context.Context, n int) ([]time.Duration, error) {
	_, ds, err := r.bootWith(ctx, n)
	return ds, err
}

func (r *rawBooter) bootWith(ctx context.Context, pings int) (time.Duration, []time.Duration, error) {
	os.Remove(r.sock)
	t0 := time.Now()
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := client.Dial(bctx, func(ctx context.Context) (net.Conn, error) {
		for {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", r.sock)
			if err == nil {
				return conn, nil
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return 0, nil, err
	}
	d := time.Since(t0)
	defer c.Close()
	// Power off cleanly (not timed), as a box stops: a killed guest leaves
	// its ext4 journal to replay, which would slow the next raw boot.
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if c.Shutdown(sctx) == nil {
			select {
			case <-exited:
			case <-sctx.Done():
			}
		}
	}()
	var ds []time.Duration
	for range pings {
		t := time.Now()
		if err := c.Ping(ctx); err != nil {
			return 0, nil, err
		}
		ds = append(ds, time.Since(t))
	}
	return d, ds, nil
}

func (r *rawBooter) close() { os.RemoveAll(r.dir) }

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

// pairedRatio is the median of a[i]/b[i]. Each pair ran back to back, so
// the machine's drift over the run (this host's speed moves by half
// within minutes) cancels out of each ratio instead of landing in one of
// the two medians.
func pairedRatio(a, b []time.Duration) float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = float64(a[i]) / float64(b[i])
	}
	sort.Float64s(r)
	if n := len(r); n%2 == 0 {
		return (r[n/2-1] + r[n/2]) / 2
	}
	return r[len(r)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
