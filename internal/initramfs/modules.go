package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultModules are the modules the guest needs from Debian's cloud
// kernel before its agent can serve: the virtio transports (MMIO for -M
// microvm, PCI for q35), the box disk and the agent's virtio-serial port.
// [ModuleOrder] adds their dependencies.
var DefaultModules = []string{
	"virtio_mmio",
	"virtio_pci",
	"virtio_blk",
	"virtio_console",
}

// DefaultLateModules are loaded by the agent after it started serving, so
// they do not delay the boot: networking, entropy and vsock.
var DefaultLateModules = []string{
	"virtio_net",
	"virtio_rng",
	"vmw_vsock_virtio_transport",
}

// LateMarker separates, in the initramfs's module list, the modules loaded
// before the agent serves from those loaded in the background after.
const LateMarker = "@late"

// WhenMarker introduces, on a line of the module list, the device patterns
// (modalias globs, as in modules.alias) one of which a present device must
// match for the line's modules to be loaded.
const WhenMarker = "when"

// busAliases are the modalias prefixes of devices found on a bus. A driver
// whose aliases all have one of them is only useful with such a device;
// others ("fs-ext4", "char-major-10-229", "devname:fuse") are loaded on
// their name, never skipped.
var busAliases = []string{"virtio:", "pci:", "acpi:", "acpi*:", "of:", "platform:"}

// moduleGroups resolves each of names like [ModuleOrder] (reading the
// module index once) and returns, per name, the paths it needs in load
// order (its dependencies, then itself) and the device patterns that make
// it useful: its aliases in
// modulesDir/modules.alias when they all name bus devices, else none (the
// module is always loaded). Names built into the kernel are skipped.
func moduleGroups(modulesDir string, names []string) ([]group, error) {
	deps, builtin, err := readModulesIndex(modulesDir)
	if err != nil {
		return nil, err
	}
	aliases, err := readModulesAlias(filepath.Join(modulesDir, "modules.alias"))
	if err != nil {
		return nil, err
	}
	var groups []group
	for _, name := range names {
		paths, err := moduleOrder(modulesDir, deps, builtin, []string{name})
		if err != nil {
			return nil, err
		}
		if len(paths) == 0 {
			continue // built in
		}
		g := group{files: paths}
		own := aliases[moduleName(paths[len(paths)-1])]
		if len(own) > 0 && !slices.ContainsFunc(own, func(a string) bool {
			return !slices.ContainsFunc(busAliases, func(p string) bool { return strings.HasPrefix(a, p) })
		}) {
			g.when = own
		}
		groups = append(groups, g)
	}
	return groups, nil
}

// readModulesAlias parses modules.alias ("alias PATTERN MODULE") into the
// patterns of each normalised module name; a missing file means none.
func readModulesAlias(file string) (map[string][]string, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	defer f.Close()
	aliases := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "alias" {
			mod := normalize(f[2])
			aliases[mod] = append(aliases[mod], f[1])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel modules: %s: %w", file, err)
	}
	return aliases, nil
}

// ModuleOrder resolves module names (virtio_blk or virtio-blk) to paths
// relative to modulesDir, dependencies included, in an order they can be
// loaded in: every module after its dependencies, each once. It reads
// modulesDir/modules.dep; names built into the kernel (modules.builtin)
// are skipped. A name that is neither is an error, and so is a module
// stored compressed (.ko.xz, .ko.zst, .ko.gz): the guest agent loads plain
// .ko files.
func ModuleOrder(modulesDir string, names []string) ([]string, error) {
	deps, builtin, err := readModulesIndex(modulesDir)
	if err != nil {
		return nil, err
	}
	return moduleOrder(modulesDir, deps, builtin, names)
}

// readModulesIndex reads modulesDir's modules.dep and modules.builtin.
func readModulesIndex(modulesDir string) (deps map[string][]string, builtin map[string]bool, err error) {
	if deps, err = readModulesDep(filepath.Join(modulesDir, "modules.dep")); err != nil {
		return nil, nil, err
	}
	if builtin, err = readModulesBuiltin(filepath.Join(modulesDir, "modules.builtin")); err != nil {
		return nil, nil, err
	}
	return deps, builtin, nil
}

// moduleOrder is [ModuleOrder] on parsed modules.dep and modules.builtin.
func moduleOrder(modulesDir string, deps map[string][]string, builtin map[string]bool, names []string) ([]string, error) {
	var order []string
	state := map[string]int{} // by path: 1 visiting, 2 done
	var visit func(p string, chain []string) error
	visit = func(p string, chain []string) error {
		switch state[p] {
		case 1:
			return fmt.Errorf("kernel modules: dependency cycle: %s", strings.Join(append(chain, p), " -> "))
		case 2:
			return nil
		}
		if ext, ok := compressedExt(p); ok {
			return fmt.Errorf("kernel module %s is compressed (%s): compressed modules are unsupported, the guest loads plain .ko files", p, ext)
		}
		state[p] = 1
		d := deps[p]
		// modules.dep lists what must load last first (modprobe loads it
		// from the end), so walk it backwards.
		for i := len(d) - 1; i >= 0; i-- {
			if err := visit(d[i], append(chain, p)); err != nil {
				return err
			}
		}
		state[p] = 2
		order = append(order, p)
		return nil
	}

	byName := map[string]string{}
	for p := range deps {
		byName[moduleName(p)] = p
	}
	for _, name := range names {
		n := normalize(name)
		p, ok := byName[n]
		if !ok {
			if builtin[n] {
				continue
			}
			return nil, fmt.Errorf("kernel module %q: neither in %s/modules.dep nor built in", name, modulesDir)
		}
		if err := visit(p, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// readModulesDep parses modules.dep: "kernel/a/b.ko: kernel/c.ko kernel/d.ko".
func readModulesDep(file string) (map[string][]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(text, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return nil, fmt.Errorf("kernel modules: %s:%d: malformed line %q", file, line, text)
		}
		deps[strings.TrimSpace(mod)] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel modules: %s: %w", file, err)
	}
	return deps, nil
}

// readModulesBuiltin returns the normalised names in modules.builtin; a
// missing file means none.
func readModulesBuiltin(file string) (map[string]bool, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	builtin := map[string]bool{}
	for _, line := range strings.Fields(string(data)) {
		builtin[moduleName(line)] = true
	}
	return builtin, nil
}

// moduleName turns "kernel/drivers/char/hw_random/virtio-rng.ko.xz" into
// "virtio_rng".
func moduleName(p string) string {
	base := path.Base(p)
	if ext, ok := compressedExt(base); ok {
		base = strings.TrimSuffix(base, ext) + ".ko"
	}
	return normalize(base)
}

// normalize maps a module name as users and file names spell it to the
// kernel's spelling: '-' becomes '_'; a trailing ".ko" is dropped.
func normalize(name string) string {
	return strings.ReplaceAll(strings.TrimSuffix(name, ".ko"), "-", "_")
}

// compressedExt reports whether p names a compressed module.
func compressedExt(p string) (string, bool) {
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(p, ext) {
			return ext, true
		}
	}
	return "", false
}
