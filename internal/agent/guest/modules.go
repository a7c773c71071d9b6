package guest

import (
	"log/slog"
	"path"
	"slices"
	"strings"
)

// The module list (/etc/boxlite/modules, written by the initramfs builder)
// has one line per requested module: the files to load in order, its
// dependencies first, then optionally the word "when" and the device
// patterns (modalias globs) one of which a present device must match. A
// line "@late" separates the modules needed to serve from those loaded
// in the background after.
const (
	lateMarker = "@late"
	whenMarker = "when"
)

// moduleGroup is one line of the module list.
type moduleGroup struct {
	files []string
	when  []string // device patterns; none: always loaded
}

// parseModuleList splits the module list into the groups loaded before
// the agent serves and those loaded after. Blank lines and lines starting
// with '#' are ignored.
func parseModuleList(list string) (early, late []moduleGroup) {
	inLate := false
	for line := range strings.Lines(list) {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == lateMarker {
			inLate = true
			continue
		}
		var g moduleGroup
		if i := slices.Index(f, whenMarker); i >= 0 {
			g = moduleGroup{files: f[:i], when: f[i+1:]}
		} else {
			g = moduleGroup{files: f}
		}
		if len(g.files) == 0 {
			continue
		}
		if inLate {
			late = append(late, g)
		} else {
			early = append(early, g)
		}
	}
	return early, late
}

// coldplug loads the module groups whose device is present, as udev does
// at boot: a driver for a device the VM does not have (vsock, entropy, the
// PCI transport on microvm) would only cost boot time. A bus is listed
// only when a pattern names it (under TCG, reading the modaliases of all
// four buses, ≈ 25 devices on microvm, took ≈ 25 ms), and again after a
// load, since a transport brings its devices.
type coldplug struct {
	devices func(bus string) ([]string, error) // modaliases of the bus's devices
	load    func(file string) error
	log     *slog.Logger

	loaded map[string]bool
	buses  map[string][]string // listed since the last load
}

// patternBus returns the bus whose devices a modalias pattern describes,
// "" if it names no bus this agent lists.
func patternBus(pattern string) string {
	for _, b := range []struct{ prefix, bus string }{
		{"virtio:", "virtio"}, {"pci:", "pci"}, {"acpi", "acpi"}, {"of:", "platform"}, {"platform:", "platform"},
	} {
		if strings.HasPrefix(pattern, b.prefix) {
			return b.bus
		}
	}
	return ""
}

// run loads groups in order, each file at most once over the coldplug's
// life. When the devices cannot be listed, every group is loaded.
func (c *coldplug) run(groups []moduleGroup) {
	if c.loaded == nil {
		c.loaded = map[string]bool{}
	}
	for _, g := range groups {
		if len(g.when) > 0 && !c.present(g.when) {
			continue
		}
		for _, f := range g.files {
			if c.loaded[f] {
				continue
			}
			c.loaded[f] = true
			c.buses = nil
			if err := c.load(f); err != nil {
				c.log.Error("init: load module", "module", f, "err", err)
			}
		}
	}
}

// present reports whether a device matches one of patterns. A pattern of
// a bus it cannot list counts as present: a needed driver is never
// skipped for want of knowledge.
func (c *coldplug) present(patterns []string) bool {
	for _, p := range patterns {
		bus := patternBus(p)
		if bus == "" {
			return true
		}
		aliases, ok := c.buses[bus]
		if !ok {
			var err error
			if aliases, err = c.devices(bus); err != nil {
				c.log.Error("init: list devices; loading the module", "bus", bus, "err", err)
				return true
			}
			if c.buses == nil {
				c.buses = map[string][]string{}
			}
			c.buses[bus] = aliases
		}
		for _, a := range aliases {
			if ok, _ := path.Match(p, a); ok {
				return true
			}
		}
	}
	return false
}
