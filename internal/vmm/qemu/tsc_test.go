package qemu

import (
	"runtime"
	"testing"
)

func TestTSCKHz(t *testing.T) {
	khz, err := TSCKHz()
	if runtime.GOARCH != "amd64" {
		if err == nil {
			t.Fatalf("TSCKHz() = %d on %s, want an error", khz, runtime.GOARCH)
		}
		t.Skipf("TSC measurement needs amd64, this is %s", runtime.GOARCH)
	}
	if err != nil {
		t.Fatalf("TSCKHz() error: %v", err)
	}
	if khz < minTSCKHz || khz > maxTSCKHz {
		t.Fatalf("TSCKHz() = %d kHz, want 500 MHz to 10 GHz", khz)
	}
	again, _ := TSCKHz()
	if again != khz {
		t.Errorf("second TSCKHz() = %d, want the cached %d", again, khz)
	}
	measured, err := measureTSCKHz()
	if err != nil {
		t.Fatal(err)
	}
	kern, ok := kernelTSCKHz()
	t.Logf("TSCKHz() = %d kHz; fresh measurement %d kHz; kernel log %d kHz (readable: %v)", khz, measured, kern, ok)
}

func TestParseKernelTSC(t *testing.T) {
	tests := []struct {
		name string
		log  string
		want int
		ok   bool
	}{
		{"detected", "[    0.000016] tsc: Detected 2100.000 MHz processor\n", 2100000, true},
		{"refined wins", "tsc: Detected 2399.876 MHz processor\n[ 1.5] tsc: Refined TSC clocksource calibration: 2399.999 MHz\n", 2399999, true},
		{"none", "Linux version 6.1\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseKernelTSC(tt.log)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseKernelTSC() = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func BenchmarkMeasureTSC(b *testing.B) {
	for b.Loop() {
		if _, err := measureTSC(0); err != nil {
			b.Fatal(err)
		}
	}
}
