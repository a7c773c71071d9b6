package vnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func TestParsePort(t *testing.T) {
	good := map[string]Port{
		"8080:80":               {Proto: "tcp", HostPort: 8080, BoxPort: 80},
		"0:80":                  {Proto: "tcp", HostPort: 0, BoxPort: 80},
		"5353:53/udp":           {Proto: "udp", HostPort: 5353, BoxPort: 53},
		"127.0.0.2:8080:80/tcp": {Proto: "tcp", HostIP: "127.0.0.2", HostPort: 8080, BoxPort: 80},
		"[::1]:8080:80":         {Proto: "tcp", HostIP: "::1", HostPort: 8080, BoxPort: 80},
		"0.0.0.0:1:65535":       {Proto: "tcp", HostIP: "0.0.0.0", HostPort: 1, BoxPort: 65535},
	}
	for in, want := range good {
		got, err := ParsePort(in)
		if err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "80", ":80", "a:80", "80:a", "8080:0", "65536:80", "80:65536",
		"-1:80", "+1:80", "8080:80/sctp", "8080:80/", "localhost:8080:80", ":8080:80", "1:2:3:4", "[::1:8080:80"} {
		if p, err := ParsePort(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParsePort(%q) = %+v, %v; want ErrInvalidArgument", in, p, err)
		}
	}
}

func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"8080:80", "127.0.0.1:0:53/udp", "[::1]:1:2", "::::", "1:2/udp/tcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePort(s)
		if err != nil {
			return
		}
		if p.Validate() != nil {
			t.Fatalf("ParsePort(%q) = %+v, which does not validate", s, p)
		}
	})
}

func TestHostWindow(t *testing.T) {
	for real, box := range map[string]string{
		"127.0.0.1":     "198.18.0.1",
		"127.0.3.4":     "198.18.3.4",
		"127.1.0.1":     "127.1.0.1", // outside the /16 window: not mapped
		"93.184.216.34": "93.184.216.34",
	} {
		got := BoxView(netip.MustParseAddr(real))
		if got.String() != box {
			t.Errorf("BoxView(%s) = %s, want %s", real, got, box)
		}
		if box != real {
			if back := RealDest(got); back.String() != real {
				t.Errorf("RealDest(%s) = %s, want %s", got, back, real)
			}
		}
	}
	if got := RealDest(netip.MustParseAddr("198.19.0.1")); got.String() != "198.19.0.1" {
		t.Errorf("RealDest outside the window = %s", got)
	}
}

func TestBindErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	free := Port{Proto: "udp", HostPort: 0, BoxPort: 53}
	_, err = New(Config{Ports: []Port{free, {Proto: "tcp", HostPort: taken, BoxPort: 80}}})
	if !errors.Is(err, errdefs.ErrPortInUse) {
		t.Fatalf("taken port: %v, want ErrPortInUse", err)
	}
	// Nothing of the set stays bound: the same set minus the taken port
	// binds again, and its port 0 got a real port.
	n, err := New(Config{Ports: []Port{free, {Proto: "tcp", HostPort: 0, BoxPort: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range n.Ports() {
		if p.HostPort == 0 || p.HostIP != "127.0.0.1" {
			t.Errorf("resolved port %+v", p)
		}
	}
	n.Close()

	if _, err := New(Config{Ports: []Port{{Proto: "tcp", HostIP: "192.0.2.1", HostPort: 0, BoxPort: 80}}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("foreign host address: %v, want ErrInvalidArgument", err)
	}
}

// TestPrivilegedPort binds a port below 1024 from a process running as
// nobody, which must fail with ErrPermission.
func TestPrivilegedPort(t *testing.T) {
	if os.Getenv("VNET_PRIV_CHILD") == "1" {
		_, err := New(Config{Ports: []Port{{Proto: "tcp", HostPort: 81, BoxPort: 80}}})
		if !errors.Is(err, errdefs.ErrPermission) {
			t.Fatalf("port 81 as uid %d: %v, want ErrPermission", os.Getuid(), err)
		}
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to start the test as nobody")
	}
	// The test binary's directory is private to root: run a copy.
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	bin := filepath.Join(dir, "vnet.test")
	if out, err := exec.Command("cp", os.Args[0], bin).CombinedOutput(); err != nil {
		t.Fatalf("copy test binary: %v: %s", err, out)
	}
	cmd := exec.Command(bin, "-test.run=^TestPrivilegedPort$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "VNET_PRIV_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
}

func TestPortString(t *testing.T) {
	p := Port{Proto: "udp", HostPort: 5353, BoxPort: 53}
	if got := p.String(); got != "127.0.0.1:5353->53/udp" {
		t.Errorf("String() = %q", got)
	}
	if got := (Port{Proto: "tcp", HostIP: "::1", HostPort: 1, BoxPort: 2}).String(); got != "[::1]:1->2/tcp" {
		t.Errorf("String() = %q", got)
	}
}
