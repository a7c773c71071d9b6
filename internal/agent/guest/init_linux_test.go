package guest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name, cmdline string
		want          bootParams
	}{
		{"defaults", "console=ttyS0 quiet", bootParams{hostname: "boxlite", root: "/dev/vda"}},
		{"set", "console=ttyS0 boxlite.hostname=web-1 boxlite.root=/dev/vdb panic=-1\n", bootParams{hostname: "web-1", root: "/dev/vdb"}},
		{"none and quotes", `boxlite.root=none boxlite.hostname="h"`, bootParams{hostname: "h", root: "none"}},
		{"empty values", "boxlite.root= boxlite.hostname=", bootParams{hostname: "boxlite", root: "/dev/vda"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseCmdline(tt.cmdline); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/box`:              "/box",
		`/box/a\040b`:       "/box/a b",
		`/x\134y`:           `/x\y`,
		`/bad\9`:            `/bad\9`,
		`/end\04`:           `/end\04`,
		`/tab\011and\012nl`: "/tab\tand\nnl",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFindPort(t *testing.T) {
	sysfs := t.TempDir()
	for port, name := range map[string]string{"vport0p0": "", "vport1p1": "org.boxlite.agent\n", "vport1p2": "other"} {
		dir := filepath.Join(sysfs, "class/virtio-ports", port)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := findPort(sysfs, "org.boxlite.agent")
	if err != nil || got != "/dev/vport1p1" {
		t.Fatalf("findPort = %q, %v; want /dev/vport1p1", got, err)
	}
	if _, err := findPort(sysfs, "missing"); err == nil {
		t.Fatal("findPort found a port that does not exist")
	}
}
