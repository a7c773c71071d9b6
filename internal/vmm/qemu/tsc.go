package qemu

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Plausible TSC frequencies, in kHz.
const (
	minTSCKHz = 500_000
	maxTSCKHz = 10_000_000
)

var tscOnce struct {
	sync.Once
	khz int
	err error
}

// TSCKHz returns the host's TSC frequency in kHz, measured once per
// process (about 100 ms on first call).
//
// The TSC is read with RDTSC against CLOCK_MONOTONIC_RAW over five 20 ms
// intervals and the median is taken. If the kernel log is readable and the
// kernel's own calibration ("tsc: Refined TSC clocksource calibration" or
// "tsc: Detected ... MHz processor") agrees within 0.5 %, the kernel's
// more precise value is returned instead. On other architectures than
// amd64 it returns an error.
func TSCKHz() (int, error) {
	tscOnce.Do(func() {
		tscOnce.khz, tscOnce.err = tscKHz()
	})
	return tscOnce.khz, tscOnce.err
}

func tscKHz() (int, error) {
	measured, err := measureTSCKHz()
	if err != nil {
		return 0, err
	}
	if kern, ok := kernelTSCKHz(); ok && math.Abs(float64(kern-measured)) <= float64(measured)*0.005 {
		return kern, nil
	}
	return measured, nil
}

// measureTSCKHz is the median of five 20 ms measurements.
func measureTSCKHz() (int, error) {
	if !tscSupported {
		return 0, fmt.Errorf("measure tsc: not supported on %s", runtime.GOARCH)
	}
	const samples = 5
	var khz []float64
	for range samples {
		k, err := measureTSC(20 * time.Millisecond)
		if err != nil {
			return 0, fmt.Errorf("measure tsc: %w", err)
		}
		khz = append(khz, k)
	}
	slices.Sort(khz)
	measured := int(math.Round(khz[samples/2]))
	if measured < minTSCKHz || measured > maxTSCKHz {
		return 0, fmt.Errorf("measure tsc: implausible frequency %d kHz", measured)
	}
	return measured, nil
}

// measureTSC counts TSC ticks across an interval of CLOCK_MONOTONIC_RAW
// and returns the rate in kHz.
func measureTSC(d time.Duration) (float64, error) {
	tsc0, ns0, err := tscAndClock()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	tsc1, ns1, err := tscAndClock()
	if err != nil {
		return 0, err
	}
	if ns1 <= ns0 || tsc1 <= tsc0 {
		return 0, errors.New("clock or tsc did not advance")
	}
	return float64(tsc1-tsc0) / float64(ns1-ns0) * 1e6, nil
}

// tscAndClock reads the clock between two TSC reads a few times and keeps
// the tightest bracket (the one least disturbed by interrupts), returning
// the TSC at its middle and the clock in nanoseconds.
func tscAndClock() (tsc uint64, ns int64, err error) {
	best := uint64(math.MaxUint64)
	for range 5 {
		var ts unix.Timespec
		a := rdtsc()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_RAW, &ts); err != nil {
			return 0, 0, err
		}
		b := rdtsc()
		if b >= a && b-a < best {
			best = b - a
			tsc = a + (b-a)/2
			ns = ts.Nano()
		}
	}
	if best == math.MaxUint64 {
		return 0, 0, errors.New("tsc went backwards")
	}
	return tsc, ns, nil
}

var kernelTSCRE = regexp.MustCompile(`tsc: (Refined TSC clocksource calibration: |Detected )(\d+)\.(\d{3}) MHz`)

// kernelTSCKHz returns the kernel's TSC calibration from its log, if the
// log is readable and still holds it. The refined value wins over the
// early one.
func kernelTSCKHz() (int, bool) {
	buf := make([]byte, 1<<20)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil || n <= 0 {
		return 0, false
	}
	return parseKernelTSC(string(buf[:n]))
}

// parseKernelTSC finds the last TSC calibration in a kernel log.
func parseKernelTSC(log string) (int, bool) {
	var detected, refined int
	for _, m := range kernelTSCRE.FindAllStringSubmatch(log, -1) {
		mhz, err1 := strconv.Atoi(m[2])
		frac, err2 := strconv.Atoi(m[3])
		if err1 != nil || err2 != nil {
			continue
		}
		khz := mhz*1000 + frac
		if m[1] != "Detected " {
			refined = khz
		} else {
			detected = khz
		}
	}
	switch {
	case refined > 0:
		return refined, true
	case detected > 0:
		return detected, true
	}
	return 0, false
}
