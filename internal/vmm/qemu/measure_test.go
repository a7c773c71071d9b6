package qemu

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// requireMeasure skips unless BOXLITE_QEMU_MEASURE=1.
func requireMeasure(t *testing.T) bootAssets {
	t.Helper()
	if os.Getenv("BOXLITE_QEMU_MEASURE") != "1" {
		t.Skip("measurement; set BOXLITE_QEMU_MEASURE=1 to run it")
	}
	return requireBoot(t)
}

// bootToPanic boots a machine whose init exits and returns the time from
// Start to Done, or false if the machine was not done within hang.
func bootToPanic(t *testing.T, m *Machine, hang time.Duration) (time.Duration, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(hang):
		m.Kill()
		return 0, false
	}
	d := time.Since(start)
	if err := m.Err(); !errors.Is(err, errdefs.ErrGuestPanic) {
		t.Fatalf("Err() = %v, want a guest panic", err)
	}
	return d, true
}

func TestMeasureBootTimes(t *testing.T) {
	a := requireMeasure(t)
	variants := []struct {
		name    string
		kernel  string
		machine string
	}{
		{"microvm vmlinux", a.vmlinux, MachineMicrovm},
		{"q35 vmlinux", a.vmlinux, MachineQ35},
		{"q35 bzImage", a.bzImage, MachineQ35},
	}
	const rounds = 7
	times := make([][]time.Duration, len(variants))
	for range rounds {
		for i, v := range variants {
			m, err := New(bootConfig(t, v.kernel, a.initrd, "exit"))
			if err != nil {
				t.Fatal(err)
			}
			m.params.Machine = v.machine
			m.params.Cmdline = KernelCmdline(m.params.MachineType() == MachineMicrovm, m.params.IsTCG(), m.params.TSCKHz, "BOXLITE_TEST_MODE=exit")
			d, ok := bootToPanic(t, m, 60*time.Second)
			if !ok {
				t.Fatalf("%s: hung", v.name)
			}
			times[i] = append(times[i], d)
		}
	}
	for i, v := range variants {
		slices.Sort(times[i])
		t.Logf("%-16s start to panic-exit: median %v, min %v, max %v (n=%d, accel %s)",
			v.name, times[i][rounds/2].Round(time.Millisecond), times[i][0].Round(time.Millisecond),
			times[i][rounds-1].Round(time.Millisecond), rounds, testAccel())
	}
}

func TestMeasureMicrovmBootLoop(t *testing.T) {
	a := requireMeasure(t)
	if testAccel() != AccelTCG {
		t.Skip("the tsc_early_khz hang is a TCG matter")
	}
	const boots = 20
	for _, withTSC := range []bool{true, false} {
		hangs := 0
		var times []time.Duration
		for range boots {
			m, err := New(bootConfig(t, a.vmlinux, a.initrd, "exit"))
			if err != nil {
				t.Fatal(err)
			}
			if m.params.MachineType() != MachineMicrovm {
				t.Fatalf("machine type %s: no TSC frequency?", m.params.MachineType())
			}
			if !withTSC {
				var kept []string
				for _, f := range strings.Fields(m.params.Cmdline) {
					if !strings.HasPrefix(f, "tsc_early_khz=") {
						kept = append(kept, f)
					}
				}
				m.params.Cmdline = strings.Join(kept, " ")
			}
			d, ok := bootToPanic(t, m, 20*time.Second)
			if !ok {
				hangs++
				continue
			}
			times = append(times, d)
		}
		slices.Sort(times)
		median := time.Duration(0)
		if len(times) > 0 {
			median = times[len(times)/2].Round(time.Millisecond)
		}
		t.Logf("microvm, tsc_early_khz %v: %d of %d boots hung (>20 s); median of the others %v", withTSC, hangs, boots, median)
		if withTSC && hangs > 0 {
			t.Errorf("%d of %d boots with tsc_early_khz hung", hangs, boots)
		}
	}
}
