package guest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDeviceAliases(t *testing.T) {
	sys := t.TempDir()
	for dev, alias := range map[string]string{
		"bus/virtio/devices/virtio0":           "virtio:d00000002v554D4551\n",
		"bus/platform/devices/LNRO0005:00":     "acpi:LNRO0005:\n",
		"bus/platform/devices/serial8250":      "", // no modalias file
		"bus/acpi/devices/LNXCPU:00":           "acpi:LNXCPU:\n",
		"bus/memory/devices/memory0":           "memory:x\n", // not a device bus
		"bus/pci/devices/0000:00:01.0/nothing": "",
	} {
		d := filepath.Join(sys, dev)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if alias != "" {
			if err := os.WriteFile(filepath.Join(d, "modalias"), []byte(alias), 0o444); err != nil {
				t.Fatal(err)
			}
		}
	}
	for bus, want := range map[string][]string{
		"virtio":   {"virtio:d00000002v554D4551"},
		"platform": {"acpi:LNRO0005:"},
		"acpi":     {"acpi:LNXCPU:"},
		"pci":      nil, // a device without a modalias
		"usb":      nil, // no such bus
	} {
		got, err := deviceAliases(sys, bus)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("deviceAliases(%s) = %q, want %q", bus, got, want)
		}
	}
	if _, err := deviceAliases(filepath.Join(sys, "nope"), "virtio"); err == nil {
		t.Fatal("deviceAliases without sysfs: no error")
	}
}
