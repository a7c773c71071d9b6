package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/boxlite-go/boxlite"
)

// guestStats are counters read inside a box.
type guestStats struct {
	agent    time.Duration // CPU of PID 1 (the agent)
	children time.Duration // CPU of its reaped children
	ctxt     int64         // context switches of the whole guest
}

// readGuestStats reads the agent's CPU times from /proc/1/stat and the
// guest's context switches from /proc/stat. The reading process itself is
// counted in the next reading's children.
func readGuestStats(ctx context.Context, box *boxlite.Box) (guestStats, error) {
	ex, err := box.Exec(ctx, boxlite.Command{Name: "sh", Args: []string{"-c", "cat /proc/1/stat; grep '^ctxt ' /proc/stat"}})
	if err != nil {
		return guestStats{}, err
	}
	out, err := io.ReadAll(ex.Stdout())
	if err != nil {
		return guestStats{}, err
	}
	if _, err := ex.Wait(ctx); err != nil {
		return guestStats{}, err
	}
	bad := fmt.Errorf("guest stats: %q", out)
	stat, ctxt, ok := strings.Cut(strings.TrimSpace(string(out)), "\nctxt ")
	if !ok {
		return guestStats{}, bad
	}
	// Fields after "(comm) ": state is field 3, utime..cstime are 14..17.
	_, rest, ok := strings.Cut(stat, ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 15 {
		return guestStats{}, bad
	}
	var ticks [4]int64
	for i, v := range f[11:15] {
		if ticks[i], err = strconv.ParseInt(v, 10, 64); err != nil {
			return guestStats{}, bad
		}
	}
	var s guestStats
	if s.ctxt, err = strconv.ParseInt(strings.TrimSpace(ctxt), 10, 64); err != nil {
		return guestStats{}, bad
	}
	tick := time.Second / 100 // USER_HZ
	s.agent = time.Duration(ticks[0]+ticks[1]) * tick
	s.children = time.Duration(ticks[2]+ticks[3]) * tick
	return s, nil
}

// abBench compares two guest agents on exec: one box each, started side by
// side, execs interleaved so that the machine's drift hits both. With
// boots > 0 it then compares their boot to first exec too, boots
// alternating.
func abBench(ctx context.Context, agents [2]string, rootfs, accel string, cpus, execs, boots int) error {
	type side struct {
		agent  string
		box    *boxlite.Box
		before guestStats
		times  []time.Duration
	}
	var sides []*side
	for _, agent := range agents {
		agent, _ = filepath.Abs(agent)
		box, done, err := startedBox(ctx, "ab", agent, rootfs, accel, cpus)
		if err != nil {
			return err
		}
		defer done()
		for range 10 { // warm-up: page cache, caches of the agent
			if err := execTrue(ctx, box); err != nil {
				return err
			}
		}
		sides = append(sides, &side{agent: agent, box: box})
	}
	for _, s := range sides {
		var err error
		if s.before, err = readGuestStats(ctx, s.box); err != nil {
			return err
		}
	}
	for range execs {
		for _, s := range sides {
			t0 := time.Now()
			if err := execTrue(ctx, s.box); err != nil {
				return err
			}
			s.times = append(s.times, time.Since(t0))
		}
	}
	fmt.Printf("accelerator: %s, %d vCPU, %s\n\n", accelName(accel), cpus, time.Now().Format("2006-01-02"))
	fmt.Println("| agent | n | exec p50 | p90 | agent CPU/exec | children CPU/exec | guest context switches/exec |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, s := range sides {
		after, err := readGuestStats(ctx, s.box)
		if err != nil {
			return err
		}
		n := time.Duration(len(s.times))
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %.0f |\n", s.agent, len(s.times),
			ms(pct(s.times, 50)), ms(pct(s.times, 90)),
			ms((after.agent-s.before.agent)/n), ms((after.children-s.before.children)/n),
			float64(after.ctxt-s.before.ctxt)/float64(len(s.times)))
	}
	if boots == 0 {
		return nil
	}

	var bootT [2][]time.Duration
	for _, s := range sides {
		if err := s.box.Stop(ctx); err != nil {
			return err
		}
	}
	for range boots {
		for i, s := range sides {
			d, err := boxBoot(ctx, s.box)
			if err != nil {
				return err
			}
			bootT[i] = append(bootT[i], d)
		}
	}
	fmt.Println()
	fmt.Println("| agent | n | boot to first exec, median | p90 | paired ratio to the first |")
	fmt.Println("|---|---|---|---|---|")
	for i, s := range sides {
		fmt.Printf("| %s | %d | %s | %s | %.2f |\n", s.agent, boots, ms(pct(bootT[i], 50)), ms(pct(bootT[i], 90)), pairedRatio(bootT[i], bootT[0]))
	}
	return nil
}
