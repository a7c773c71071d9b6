package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/boxlite-go/boxlite"
)

// cloneBench: clone of a box with 1 MB written vs 500 MB written; export
// throughput against qemu-img convert + zstd of the same chain; the pause
// of a running box during a live clone and a live export.
func cloneBench(ctx context.Context, agent, rootfs, accel string) error {
	rt, home, closeRT, err := tempRuntime(ctx, "boxlite-bench-clone-", agent, accel)
	if err != nil {
		return err
	}
	defer closeRT()

	mk := func(name, script string) (*boxlite.Box, error) {
		b, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfs}, name)
		if err != nil {
			return nil, err
		}
		if err := b.Start(ctx); err != nil {
			return nil, err
		}
		if err := runScript(ctx, b, script); err != nil {
			return nil, err
		}
		return b, b.Stop(ctx)
	}
	small, err := mk("small", "dd if=/dev/urandom of=/root/data bs=1M count=1 2>/dev/null; sync")
	if err != nil {
		return err
	}
	big, err := mk("big", "dd if=/dev/urandom of=/root/rand bs=1M count=50 2>/dev/null; dd if=/dev/zero of=/root/data bs=1M count=450 2>/dev/null; sync")
	if err != nil {
		return err
	}

	timeClones := func(b *boxlite.Box) ([]time.Duration, error) {
		var ds []time.Duration
		for range 10 {
			t0 := time.Now()
			c, err := b.Clone(ctx, boxlite.CloneOptions{}, "")
			if err != nil {
				return nil, err
			}
			ds = append(ds, time.Since(t0))
			if err := rt.Remove(ctx, c.ID(), false); err != nil {
				return nil, err
			}
		}
		return ds, nil
	}
	cs, err := timeClones(small)
	if err != nil {
		return err
	}
	cb, err := timeClones(big)
	if err != nil {
		return err
	}

	// Export of the big box against qemu-img convert + zstd of its chain.
	out, err := os.MkdirTemp("", "boxlite-bench-export-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	var exp, base []time.Duration
	for i := range 3 {
		t0 := time.Now()
		a, err := big.Export(ctx, boxlite.ExportOptions{}, out)
		if err != nil {
			return err
		}
		exp = append(exp, time.Since(t0))
		os.Remove(a.Path)
		t0 = time.Now()
		flat := filepath.Join(out, fmt.Sprint("flat-", i, ".qcow2"))
		for _, c := range [][]string{
			{"qemu-img", "convert", "-O", "qcow2", filepath.Join(home, "boxes", big.ID(), "disk.qcow2"), flat},
			{"zstd", "-q", "-T0", "--rm", flat},
		} {
			if o, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %v: %s", c, err, o)
			}
		}
		base = append(base, time.Since(t0))
		os.Remove(flat + ".zst")
	}

	// Pauses of a running box.
	if err := small.Start(ctx); err != nil {
		return err
	}
	var pauses []time.Duration
	for range 5 {
		c, err := small.Clone(ctx, boxlite.CloneOptions{}, "")
		if err != nil {
			return err
		}
		pauses = append(pauses, small.Info().LastFreezePause)
		rt.Remove(ctx, c.ID(), false)
	}
	a, err := small.Export(ctx, boxlite.ExportOptions{}, out)
	if err != nil {
		return err
	}
	os.Remove(a.Path)
	exportPause := small.Info().LastFreezePause

	ms50 := pct(cs, 50)
	mb50 := pct(cb, 50)
	fmt.Printf("| clone of a stopped box, 1 MB written | %d | %s | %s | 1.00 |\n", len(cs), ms(ms50), ms(pct(cs, 99)))
	fmt.Printf("| clone of a stopped box, 500 MB written | %d | %s | %s | %.2f |\n", len(cb), ms(mb50), ms(pct(cb, 99)), float64(mb50)/float64(ms50))
	fmt.Printf("| baseline: qemu-img convert + zstd of the 500 MB box's chain | %d | %s | %s | 1.00 |\n", len(base), ms(pct(base, 50)), ms(pct(base, 99)))
	fmt.Printf("| export of the 500 MB box (throughput vs baseline) | %d | %s | %s | %.2f× |\n", len(exp), ms(pct(exp, 50)), ms(pct(exp, 99)), float64(pct(base, 50))/float64(pct(exp, 50)))
	fmt.Printf("| VM pause during a live clone | %d | %s | %s | |\n", len(pauses), ms(pct(pauses, 50)), ms(pct(pauses, 99)))
	fmt.Printf("| VM pause during a live export | 1 | %s | | |\n", ms(exportPause))
	return nil
}

func runScript(ctx context.Context, b *boxlite.Box, script string) error {
	ex, err := b.Exec(ctx, boxlite.Command{Name: "sh", Args: []string{"-c", script}})
	if err != nil {
		return err
	}
	res, err := ex.Wait(ctx)
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("%q exited %d", script, res.ExitCode)
	}
	return err
}
