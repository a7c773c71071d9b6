package guest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// deviceAliases returns the modaliases of the devices on bus (virtio,
// pci, platform, acpi) under sys (/sys).
func deviceAliases(sys, bus string) ([]string, error) {
	if _, err := os.Stat(filepath.Join(sys, "bus")); err != nil {
		return nil, err // sysfs not mounted: the caller loads the module
	}
	dir := filepath.Join(sys, "bus", bus, "devices")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no such bus (yet): no device on it
	}
	if err != nil {
		return nil, err
	}
	var aliases []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "modalias"))
		if err == nil {
			aliases = append(aliases, strings.TrimSpace(string(b)))
		}
	}
	return aliases, nil
}

// loadModule loads the kernel module file at path; one already loaded is
// not an error.
func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags := 0
	if ext := filepath.Ext(path); ext == ".xz" || ext == ".zst" || ext == ".gz" {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(fd, "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
