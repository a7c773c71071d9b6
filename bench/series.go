package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// seriesBlock is how many execs one row of the series averages.
const seriesBlock = 20

// seriesBench shows how the exec round trip moves over a run on one box:
// execs in blocks, each block's mean next to the CPU time the box's QEMU
// process used per exec in it (all its threads, from the host's
// /proc/PID/task/*/schedstat). Under TCG the QEMU column follows the
// exec's: the vCPU thread is on a host CPU for nearly all of the round
// trip, so a slow block is the same work executed more slowly, not time
// spent waiting.
func seriesBench(ctx context.Context, agent, rootfs, accel string, cpus, execs int) error {
	if execs < seriesBlock {
		return fmt.Errorf("-series needs -execs of at least %d, got %d", seriesBlock, execs)
	}
	box, done, err := startedBox(ctx, "series", agent, rootfs, accel, cpus)
	if err != nil {
		return err
	}
	defer done()
	info := box.Info()
	if _, err := timeExecs(ctx, box, seriesBlock); err != nil { // warm-up
		return err
	}

	fmt.Printf("accelerator: %s, %d vCPU, %s, execs of true in blocks of %d\n\n", accelName(accel), cpus, time.Now().Format("2006-01-02"), seriesBlock)
	fmt.Println("| time | exec mean | QEMU CPU per exec | QEMU CPU / wall |")
	fmt.Println("|---|---|---|---|")
	var means []time.Duration
	for b := 0; b < execs/seriesBlock; b++ {
		cpu0, err := processCPU(info.PID)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := timeExecs(ctx, box, seriesBlock); err != nil {
			return err
		}
		wall := time.Since(t0)
		cpu1, err := processCPU(info.PID)
		if err != nil {
			return err
		}
		mean := wall / seriesBlock
		means = append(means, mean)
		fmt.Printf("| %s | %s | %s | %.2f |\n", time.Now().Format("15:04:05.0"), ms(mean), ms((cpu1-cpu0)/seriesBlock), float64(cpu1-cpu0)/float64(wall))
	}
	if len(means) > 0 {
		sort.Slice(means, func(i, j int) bool { return means[i] < means[j] })
		fmt.Printf("\nblock means: fastest %s, median %s, slowest %s\n", ms(means[0]), ms(means[len(means)/2]), ms(means[len(means)-1]))
	}
	return nil
}

// processCPU is the CPU time all threads of process pid have used so far.
// Threads that exited in between are not counted, which is fine for QEMU,
// whose threads live as long as it does.
func processCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread is gone
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q", dir, b)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

func accelName(accel string) string {
	if accel == "" {
		return "auto"
	}
	return accel
}
