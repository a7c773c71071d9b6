package guest

import (
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"testing"
)

func TestParseModuleList(t *testing.T) {
	list := "# boot\n" +
		"virtio_ring.ko virtio.ko virtio_mmio.ko when of:N*T*Cvirtio,mmio acpi*:LNRO0005:*\n" +
		"\n" +
		"libcrc32c.ko\n" +
		"@late\n" +
		"failover.ko virtio_net.ko when virtio:d00000001v*\n" +
		"when virtio:d00000004v*\n"
	early, late := parseModuleList(list)
	wantEarly := []moduleGroup{
		{files: []string{"virtio_ring.ko", "virtio.ko", "virtio_mmio.ko"}, when: []string{"of:N*T*Cvirtio,mmio", "acpi*:LNRO0005:*"}},
		{files: []string{"libcrc32c.ko"}},
	}
	wantLate := []moduleGroup{{files: []string{"failover.ko", "virtio_net.ko"}, when: []string{"virtio:d00000001v*"}}}
	if !reflect.DeepEqual(early, wantEarly) || !reflect.DeepEqual(late, wantLate) {
		t.Fatalf("parseModuleList = %+v, %+v; want %+v, %+v", early, late, wantEarly, wantLate)
	}
	// The one-file-a-line list of earlier builders loads everything.
	early, late = parseModuleList("virtio.ko\nvirtio_blk.ko\n@late\nvirtio_net.ko\n")
	if len(early) != 2 || len(late) != 1 || early[1].files[0] != "virtio_blk.ko" || early[1].when != nil {
		t.Fatalf("old list: %+v, %+v", early, late)
	}
}

// fakeKernel is a guest whose devices appear as their bus drivers load.
type fakeKernel struct {
	devices []string
	appear  map[string][]string // module file -> devices it brings
	loaded  []string
	scans   int
	scanErr error
}

func (k *fakeKernel) coldplug() *coldplug {
	return &coldplug{
		devices: func(bus string) ([]string, error) {
			k.scans++
			var on []string
			for _, d := range k.devices {
				if patternBus(d) == bus {
					on = append(on, d)
				}
			}
			return on, k.scanErr
		},
		load: func(f string) error {
			k.loaded = append(k.loaded, f)
			k.devices = append(k.devices, k.appear[f]...)
			return nil
		},
		log: slog.New(slog.DiscardHandler),
	}
}

func TestColdplug(t *testing.T) {
	early, late := parseModuleList(
		"virtio_ring.ko virtio.ko virtio_mmio.ko when of:N*T*Cvirtio,mmio acpi*:LNRO0005:*\n" +
			"virtio_ring.ko virtio.ko virtio_pci.ko when pci:v00001AF4d*sv*sd*bc*sc*i*\n" +
			"virtio_ring.ko virtio.ko virtio_blk.ko when virtio:d00000002v*\n" +
			"fuse.ko\n" +
			"@late\n" +
			"virtio.ko failover.ko virtio_net.ko when virtio:d00000001v*\n" +
			"virtio.ko virtio-rng.ko when virtio:d00000004v*\n")
	tests := []struct {
		name    string
		devices []string
		appear  map[string][]string
		want    []string
	}{{
		name:    "microvm: the MMIO transport, then the devices it brings; no PCI, no entropy",
		devices: []string{"acpi:LNRO0005:", "acpi:LNXCPU:", "platform:serial8250"},
		appear:  map[string][]string{"virtio_mmio.ko": {"virtio:d00000002v554D4551", "virtio:d00000001v554D4551"}},
		want:    []string{"virtio_ring.ko", "virtio.ko", "virtio_mmio.ko", "virtio_blk.ko", "fuse.ko", "failover.ko", "virtio_net.ko"},
	}, {
		name:    "q35: the PCI transport; a box without a NIC loads no network driver",
		devices: []string{"pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00", "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"},
		appear:  map[string][]string{"virtio_pci.ko": {"virtio:d00000002v00001AF4", "virtio:d00000004v00001AF4"}},
		want:    []string{"virtio_ring.ko", "virtio.ko", "virtio_pci.ko", "virtio_blk.ko", "fuse.ko", "virtio-rng.ko"},
	}, {
		name: "no device at all: only the modules tied to none",
		want: []string{"fuse.ko"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &fakeKernel{devices: tt.devices, appear: tt.appear}
			c := k.coldplug()
			c.run(early)
			c.run(late)
			if !slices.Equal(k.loaded, tt.want) {
				t.Fatalf("loaded %q, want %q", k.loaded, tt.want)
			}
		})
	}
}

// TestColdplugScans: a bus is listed when a pattern names it, and again
// only after a load.
func TestColdplugScans(t *testing.T) {
	k := &fakeKernel{devices: []string{"virtio:d00000002v554D4551"}}
	c := k.coldplug()
	early, _ := parseModuleList("a.ko when virtio:d00000099v*\nb.ko when virtio:d00000098v*\nc.ko when virtio:d00000002v*\nd.ko when virtio:d00000097v*\n")
	c.run(early)
	if k.scans != 2 || !slices.Equal(k.loaded, []string{"c.ko"}) {
		t.Fatalf("%d scans, loaded %q; want 2 scans (before a, after c), loaded c.ko", k.scans, k.loaded)
	}
	// A pattern of a bus the agent does not list: loaded, unlisted.
	k = &fakeKernel{}
	c = k.coldplug()
	early, _ = parseModuleList("usb.ko when usb:v*p*\n")
	c.run(early)
	if k.scans != 0 || !slices.Equal(k.loaded, []string{"usb.ko"}) {
		t.Fatalf("%d scans, loaded %q; want none, usb.ko", k.scans, k.loaded)
	}
}

// TestColdplugNoDevices: when the devices cannot be listed, nothing is
// skipped.
func TestColdplugNoDevices(t *testing.T) {
	k := &fakeKernel{scanErr: errors.New("no sysfs")}
	c := k.coldplug()
	early, _ := parseModuleList("virtio.ko a.ko when virtio:d00000099v*\nvirtio.ko b.ko when pci:*\n")
	c.run(early)
	if want := []string{"virtio.ko", "a.ko", "b.ko"}; !slices.Equal(k.loaded, want) {
		t.Fatalf("loaded %q, want %q", k.loaded, want)
	}
}
