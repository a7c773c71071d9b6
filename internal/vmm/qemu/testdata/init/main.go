// Command init is the /init of the initramfs the qemu package's boot tests
// build. The kernel passes unknown NAME=VALUE parameters of its command
// line to init's environment; BOXLITE_TEST_MODE picks what it does:
//
//	exit      return from PID 1, so the kernel panics ("Attempted to kill init")
//	sleep     sleep forever
//	poweroff  power the machine off
//	devices   load the modules named in BOXLITE_TEST_MODULES from /modules,
//	          in order, then serve the agent port: on "ping" reply with one
//	          line per virtio disk and "end"; on "poweroff" power off; on
//	          any error, exit (so the kernel panics)
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const agentPort = "org.boxlite.agent"

func main() {
	mode := os.Getenv("BOXLITE_TEST_MODE")
	fmt.Printf("boxlite-test-init: mode=%s\n", mode)
	switch mode {
	case "sleep":
		sleepForever()
	case "poweroff":
		powerOff()
	case "devices":
		// On error, return: the kernel panics and the test sees why.
		if err := devices(); err != nil {
			fmt.Printf("boxlite-test-init: %v\n", err)
		}
	default:
		// Returning from PID 1 panics the kernel.
	}
}

func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}

func powerOff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Printf("boxlite-test-init: poweroff: %v\n", err)
	}
	sleepForever()
}

func devices() error {
	os.MkdirAll("/sys", 0o755)
	os.MkdirAll("/dev", 0o755)
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, name := range strings.Split(os.Getenv("BOXLITE_TEST_MODULES"), ",") {
		if name == "" {
			continue
		}
		if err := loadModule("/modules/" + name + ".ko"); err != nil {
			return err
		}
	}
	port, err := findPort(agentPort)
	if err != nil {
		return err
	}
	fmt.Printf("boxlite-test-init: agent port %s\n", port)
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	// read returns EOF while the host side is not connected: retry.
	r := bufio.NewReader(retryReader{f})
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read port: %w", err)
		}
		switch strings.TrimSpace(line) {
		case "ping":
			fmt.Fprint(f, diskReport()+"end\n")
		case "poweroff":
			powerOff()
		}
	}
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return fmt.Errorf("load %s: %w", path, err)
	}
	return nil
}

// findPort waits for the virtio-serial port with the given name.
func findPort(name string) (string, error) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		dirs, _ := filepath.Glob("/sys/class/virtio-ports/*")
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, "name"))
			if err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + filepath.Base(d), nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("no virtio port %q", name)
}

// diskReport describes each virtio disk: name, serial, read-only flag and
// size in 512-byte sectors.
func diskReport() string {
	var b strings.Builder
	dirs, _ := filepath.Glob("/sys/block/vd*")
	for _, d := range dirs {
		attr := func(n string) string {
			v, _ := os.ReadFile(filepath.Join(d, n))
			return strings.TrimSpace(string(v))
		}
		fmt.Fprintf(&b, "disk %s serial=%s ro=%s sectors=%s\n", filepath.Base(d), attr("serial"), attr("ro"), attr("size"))
	}
	return b.String()
}

type retryReader struct{ f *os.File }

func (r retryReader) Read(p []byte) (int, error) {
	for {
		n, err := r.f.Read(p)
		if n > 0 || (err != nil && !errors.Is(err, io.EOF)) {
			return n, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
