package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

// The network tests send traffic only to loopback addresses: the box's
// DNS answers test names with 127.0.0.x, and the "denied" targets are
// decoy servers on other loopback addresses that record any connection or
// datagram that gets through. The box reaches the host's 127.0.a.b at
// 198.18.a.b (boxlite's host window).

// decoy is a TCP or UDP server on a loopback address that counts what
// reaches it.
type decoy struct {
	addr string // ip:port on the host
	port int
	mu   sync.Mutex
	hits []string
}

func (d *decoy) hit(what string) {
	d.mu.Lock()
	d.hits = append(d.hits, what)
	d.mu.Unlock()
}

func (d *decoy) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.hits...)
}

// listenLoopback listens on ip (127.0.0.x) at a free port. Linux routes
// all of 127.0.0.0/8 to lo, so no setup is needed.
func listenLoopback(t *testing.T, network, ip string) (net.Listener, net.PacketConn) {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return nil, pc
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, nil
}

// httpServer serves body on ip at a free port, recording each request's
// Host.
func httpServer(t *testing.T, ip, body string) *decoy {
	l, _ := listenLoopback(t, "tcp", ip)
	d := &decoy{addr: l.Addr().String(), port: l.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.hit("http " + r.Host)
		io.WriteString(w, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return d
}

// tcpDecoy accepts connections on ip and records each one.
func tcpDecoy(t *testing.T, ip string) *decoy {
	l, _ := listenLoopback(t, "tcp", ip)
	d := &decoy{addr: l.Addr().String(), port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d.hit("tcp " + c.RemoteAddr().String())
			c.Close()
		}
	}()
	return d
}

// udpServer records datagrams on ip and, if echo, sends them back.
func udpServer(t *testing.T, ip string, echo bool) *decoy {
	_, pc := listenLoopback(t, "udp", ip)
	d := &decoy{addr: pc.LocalAddr().String(), port: pc.LocalAddr().(*net.UDPAddr).Port}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			d.hit("udp " + string(buf[:n]))
			if echo {
				pc.WriteTo(buf[:n], from)
			}
		}
	}()
	return d
}

// netRootfs is the busybox root filesystem plus nettool (UDP client and
// echo server), built once per test binary.
var netRootfs struct {
	once sync.Once
	dir  string
	err  error
}

func netToolRootfs(t *testing.T) string {
	t.Helper()
	netRootfs.once.Do(func() {
		dir, err := os.MkdirTemp("", "boxlite-e2e-netroot-")
		if err != nil {
			netRootfs.err = err
			return
		}
		netRootfs.dir = filepath.Join(dir, "rootfs")
		if out, err := exec.Command("cp", "-a", rootfsPath, netRootfs.dir).CombinedOutput(); err != nil {
			netRootfs.err = fmt.Errorf("copy rootfs: %v: %s", err, out)
			return
		}
		build := exec.Command("go", "build", "-o", filepath.Join(netRootfs.dir, "bin", "nettool"), "./test/e2e/nettool")
		build.Dir = repoRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			netRootfs.err = fmt.Errorf("build nettool: %v: %s", err, out)
		}
	})
	if netRootfs.err != nil {
		t.Fatal(netRootfs.err)
	}
	return netRootfs.dir
}

// boxWindow is where the box sees a host loopback address.
func boxWindow(ip string) string { return strings.Replace(ip, "127.0.", "198.18.", 1) }

func TestNetworkAllowList(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})

	alias := httpServer(t, "127.0.0.1", "via-alias")     // HostAlias
	allowed := httpServer(t, "127.0.0.2", "by-name")     // allowed.test
	allowedUDP := udpServer(t, "127.0.0.2", true)        // allowed.test, UDP echo
	byIP := httpServer(t, "127.0.0.6", "by-ip")          // listed as 127.0.0.6
	literal := tcpDecoy(t, "127.0.0.3")                  // not listed
	rawUDP := udpServer(t, "127.0.0.4", true)            // not listed
	deniedName := httpServer(t, "127.0.0.5", "leaked")   // denied.test, not listed
	fronted := httpServer(t, "127.0.0.7", "fronted")     // front.test: listed, but the Host header is not
	outside := httpServer(t, "127.0.0.8", "not-allowed") // the HostAlias rule covers 127.0.0.1 only

	box := startBox(t, rt, boxlite.BoxOptions{
		Rootfs:   netToolRootfs(t),
		AllowNet: []string{boxlite.HostAlias, "allowed.test", "front.test", "127.0.0.6"},
		Hosts: map[string]string{
			"allowed.test": "127.0.0.2",
			"denied.test":  "127.0.0.5",
			"front.test":   "127.0.0.7",
		},
		Ports: []boxlite.PortMapping{
			{HostPort: 0, BoxPort: 8080},
			{Protocol: "udp", HostPort: 0, BoxPort: 5000},
		},
	})

	// (busybox's wget -T crashes: the exec's timeout bounds it instead.)
	get := func(url string, extra ...string) result {
		args := append([]string{"-q", "-O", "-"}, extra...)
		return run(t, box, boxlite.Command{Name: "wget", Args: append(args, url), Timeout: 30 * time.Second})
	}
	mustGet := func(url, want string) {
		t.Helper()
		if r := get(url); r.res.ExitCode != 0 || r.stdout != want {
			t.Errorf("wget %s: exit %d, stdout %q, stderr %q; want %q", url, r.res.ExitCode, r.stdout, r.stderr, want)
		}
	}

	// Allowed: the host alias, a listed name, a listed address.
	mustGet(fmt.Sprintf("http://%s:%d/", boxlite.HostAlias, alias.port), "via-alias")
	mustGet(fmt.Sprintf("http://allowed.test:%d/", allowed.port), "by-name")
	mustGet(fmt.Sprintf("http://%s:%d/", boxWindow("127.0.0.6"), byIP.port), "by-ip")
	if r := run(t, box, boxlite.Command{Name: "nettool", Args: []string{"udp-send", fmt.Sprintf("allowed.test:%d", allowedUDP.port), "ping"}}); r.stdout != "ping\n" {
		t.Errorf("udp to allowed.test: %+v", r)
	}

	// Refused: a non-listed loopback literal (TCP and UDP), DNS for a
	// non-listed name, a connection to its address anyway, a listed
	// name's address with a non-listed HTTP Host, another host loopback
	// address than the alias's.
	if r := run(t, box, sh(fmt.Sprintf("nc %s %d </dev/null", boxWindow("127.0.0.3"), literal.port))); r.res.ExitCode == 0 {
		t.Errorf("tcp to a non-listed address got through: %+v", r)
	}
	if r := run(t, box, boxlite.Command{Name: "nettool", Args: []string{"udp-send", fmt.Sprintf("%s:%d", boxWindow("127.0.0.4"), rawUDP.port), "leak"}}); r.res.ExitCode == 0 {
		t.Errorf("udp to a non-listed address got an answer: %+v", r)
	}
	if r := run(t, box, sh("nslookup denied.test")); r.res.ExitCode == 0 || !strings.Contains(r.stdout+r.stderr, "REFUSED") {
		t.Errorf("dns for a non-listed name: %+v", r)
	}
	if r := run(t, box, sh(fmt.Sprintf("nc %s %d </dev/null", boxWindow("127.0.0.5"), deniedName.port))); r.res.ExitCode == 0 {
		t.Errorf("tcp to a non-listed name's address got through: %+v", r)
	}
	if r := get(fmt.Sprintf("http://front.test:%d/", fronted.port), "--header", "Host: evil.test"); r.stdout == "fronted" {
		t.Errorf("a listed name's address served a non-listed Host: %+v", r)
	}
	if r := run(t, box, sh(fmt.Sprintf("nc %s %d </dev/null", boxWindow("127.0.0.8"), outside.port))); r.res.ExitCode == 0 {
		t.Errorf("host loopback outside the alias got through: %+v", r)
	}
	for name, d := range map[string]*decoy{"literal": literal, "raw udp": rawUDP, "denied name": deniedName, "fronted": fronted, "outside": outside} {
		if hits := d.seen(); len(hits) > 0 {
			t.Errorf("decoy %s (%s) was reached: %q", name, d.addr, hits)
		}
	}
	if hits := allowed.seen(); len(hits) != 1 || hits[0] != fmt.Sprintf("http allowed.test:%d", allowed.port) {
		t.Errorf("allowed server saw %q", hits)
	}

	// Every decision is in the audit log.
	evs, err := box.NetworkLog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		proto, dst, host string
		allow            bool
	}{
		{"tcp", alias.addr, "", true},
		{"dns", "", "allowed.test", true},
		{"tcp", allowed.addr, "allowed.test", true},
		{"tcp", byIP.addr, "", true},
		{"udp", allowedUDP.addr, "allowed.test", true},
		{"tcp", literal.addr, "", false},
		{"udp", rawUDP.addr, "", false},
		{"dns", "", "denied.test", false},
		{"tcp", deniedName.addr, "", false},
		{"tcp", fronted.addr, "evil.test", false},
		{"tcp", outside.addr, "", false},
	}
	for _, w := range want {
		found := false
		for _, e := range evs {
			if e.Proto == w.proto && e.Dst == w.dst && e.Allow == w.allow && (w.host == "" || e.Host == w.host) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("audit log lacks %+v; it has:\n%s", w, formatEvents(evs))
		}
	}

	// Forwarded ports: port 0 got real ports; TCP and UDP reach servers
	// in the box.
	info := box.Info()
	if len(info.Ports) != 2 || info.Ports[0].HostPort == 0 || info.Ports[1].HostPort == 0 {
		t.Fatalf("ports: %+v", info.Ports)
	}
	if r := run(t, box, sh("mkdir -p /tmp/www && echo from-box > /tmp/www/index.html && httpd -p 8080 -h /tmp/www")); r.res.ExitCode != 0 {
		t.Fatalf("httpd: %+v", r)
	}
	ex, err := box.Exec(context.Background(), boxlite.Command{Name: "nettool", Args: []string{"udp-echo", "5000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Kill(context.Background())
	body, err := getWithRetry(fmt.Sprintf("http://127.0.0.1:%d/", info.Ports[0].HostPort))
	if err != nil || body != "from-box\n" {
		t.Errorf("forwarded tcp port: %q, %v", body, err)
	}
	if got, err := udpRoundTrip(fmt.Sprintf("127.0.0.1:%d", info.Ports[1].HostPort), "marco"); err != nil || got != "marco" {
		t.Errorf("forwarded udp port: %q, %v", got, err)
	}

	m, err := box.Metrics(context.Background())
	if err != nil || m.NetRxBytes == 0 || m.NetTxBytes == 0 {
		t.Errorf("metrics: %+v, %v", m, err)
	}
}

func formatEvents(evs []boxlite.NetEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %s host=%s allow=%v %s\n", e.Proto, e.Dst, e.Host, e.Allow, e.Reason)
	}
	return b.String()
}

// getWithRetry GETs url, retrying while the server in the box starts.
func getWithRetry(url string) (string, error) {
	var err error
	for i := 0; i < 20; i++ {
		var resp *http.Response
		if resp, err = http.Get(url); err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b), rerr
		}
		time.Sleep(250 * time.Millisecond)
	}
	return "", err
}

// udpRoundTrip sends msg and waits for the echo, resending while the
// server in the box starts.
func udpRoundTrip(addr, msg string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for i := 0; i < 20; i++ {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", errors.New("no echo")
}

func TestNetworkOpenEgress(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	srv := httpServer(t, "127.0.0.2", "open")
	box := startBox(t, rt, boxlite.BoxOptions{Hosts: map[string]string{"web.test": "127.0.0.2"}})
	// With no allow-list the box goes anywhere but to the host's
	// loopback, which needs listing.
	r := run(t, box, sh(fmt.Sprintf("nslookup web.test >/dev/null && nc %s %d </dev/null", boxWindow("127.0.0.2"), srv.port)))
	if r.res.ExitCode == 0 || len(srv.seen()) > 0 {
		t.Errorf("host loopback reached without being listed: %+v, %q", r, srv.seen())
	}
	r = run(t, box, sh("cat /etc/resolv.conf; ip -o -4 addr show eth0"))
	if !strings.Contains(r.stdout, "nameserver 192.168.127.1") || !strings.Contains(r.stdout, "192.168.127.2/24") {
		t.Errorf("network config: %+v", r)
	}
	// IPv4 only: IPv6 is off on the NIC, loopback keeps ::1.
	r = run(t, box, sh("cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; cat /proc/net/if_inet6"))
	if f := strings.Fields(r.stdout); len(f) == 0 || f[0] != "1" || !strings.Contains(r.stdout, "00000000000000000000000000000001") ||
		strings.Contains(r.stdout, "eth0") {
		t.Errorf("IPv6: %+v", r)
	}
	// Only drivers for the VM's devices are loaded: the NIC's, and not
	// those of the entropy or vsock devices these VMs do not have.
	mods := loadedModules(t, box)
	for mod, want := range map[string]bool{"virtio_net": true, "virtio_rng": false, "vmw_vsock_virtio_transport": false} {
		if mods[mod] != want {
			t.Errorf("module %s loaded: %v, want %v (loaded: %v)", mod, mods[mod], want, mods)
		}
	}
}

// loadedModules lists the guest kernel's loaded modules.
func loadedModules(t *testing.T, box *boxlite.Box) map[string]bool {
	t.Helper()
	r := run(t, box, sh("cut -d' ' -f1 /proc/modules"))
	if r.res.ExitCode != 0 {
		t.Fatalf("/proc/modules: %+v", r)
	}
	mods := map[string]bool{}
	for _, m := range strings.Fields(r.stdout) {
		mods[m] = true
	}
	return mods
}

func TestNetworkDisabled(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	box := startBox(t, rt, boxlite.BoxOptions{Network: boxlite.NetworkDisabled})
	r := run(t, box, sh("ls /sys/class/net"))
	if r.res.ExitCode != 0 || strings.Fields(r.stdout)[0] != "lo" || len(strings.Fields(r.stdout)) != 1 {
		t.Errorf("interfaces: %+v", r)
	}
	if r := run(t, box, sh("ping -c 1 -W 2 127.0.0.1 >/dev/null")); r.res.ExitCode != 0 {
		t.Errorf("lo is not up: %+v", r)
	}
	// No NIC, no NIC driver: the agent loads drivers for present devices.
	if mods := loadedModules(t, box); mods["virtio_net"] || !mods["virtio_blk"] {
		t.Errorf("loaded modules without a NIC: %v", mods)
	}
}

func TestNetworkBadInput(t *testing.T) {
	rt := newRuntime(t, boxlite.Options{})
	ctx := context.Background()
	for _, opts := range []boxlite.BoxOptions{
		{AllowNet: []string{"*."}},
		{AllowNet: []string{"10.0.0.0/33"}},
		{AllowNet: []string{"http://example.com"}},
		{Ports: []boxlite.PortMapping{{BoxPort: 0}}},
		{Ports: []boxlite.PortMapping{{HostPort: 70000, BoxPort: 80}}},
		{Ports: []boxlite.PortMapping{{Protocol: "sctp", BoxPort: 80}}},
		{Ports: []boxlite.PortMapping{{HostIP: "localhost", BoxPort: 80}}},
		{Ports: []boxlite.PortMapping{{HostPort: 8080, BoxPort: 80}, {HostPort: 8080, BoxPort: 81}}},
		{Network: boxlite.NetworkDisabled, Ports: []boxlite.PortMapping{{BoxPort: 80}}},
		{Network: "bridge"},
		{Hosts: map[string]string{"x.test": "not-an-ip"}},
	} {
		opts.Rootfs = rootfsPath
		if _, err := rt.Create(ctx, opts, ""); !errors.Is(err, boxlite.ErrInvalidArgument) {
			t.Errorf("create %+v: %v, want ErrInvalidArgument", opts, err)
		}
	}
	for _, spec := range []string{"80", "a:80", "1:2:3:4", "0:0", "8080:80/sctp", ":8080:80", "8080:-1"} {
		if _, err := boxlite.ParsePortMapping(spec); !errors.Is(err, boxlite.ErrInvalidArgument) {
			t.Errorf("ParsePortMapping(%q): %v, want ErrInvalidArgument", spec, err)
		}
	}
	if boxes, _ := rt.List(ctx); len(boxes) != 0 {
		t.Errorf("bad input left %d boxes", len(boxes))
	}

	// A host port that is taken fails Start with a typed error, and the
	// box stays stopped with no VM.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	box, err := rt.Create(ctx, boxlite.BoxOptions{Rootfs: rootfsPath, Ports: []boxlite.PortMapping{{HostPort: taken, BoxPort: 80}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	err = box.Start(ctx)
	if !errors.Is(err, boxlite.ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(taken)) {
		t.Fatalf("start with a taken port: %v, want ErrPortInUse naming the port", err)
	}
	if st := box.Info().Status; st == boxlite.StatusRunning || qemuRunning(box.ID()) {
		t.Fatalf("box with a taken port: status %s, qemu running %v", st, qemuRunning(box.ID()))
	}

	// A guest whose network cannot be set up (here: its /etc, where
	// resolv.conf goes, is a file) does not report running.
	broken := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", rootfsPath, broken).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v: %s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(broken, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "etc"), []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	box, err = rt.Create(ctx, boxlite.BoxOptions{Rootfs: broken}, "")
	if err != nil {
		t.Fatal(err)
	}
	err = box.Start(ctx)
	if !errors.Is(err, boxlite.ErrNetwork) {
		t.Fatalf("start with a broken guest network: %v, want ErrNetwork", err)
	}
	if st := box.Info().Status; st == boxlite.StatusRunning {
		t.Fatalf("box whose network failed reports %s", st)
	}
	if qemuRunning(box.ID()) {
		t.Fatal("the QEMU of a box whose network failed still runs")
	}
}
