package vnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"github.com/containers/gvisor-tap-vsock/pkg/types"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// The virtual network every box sees. Boxes are isolated from each other
// (one network per box), so they all use the same addresses.
var (
	// Subnet is the box's link: the gateway (host side) and the box.
	Subnet = netip.MustParsePrefix("192.168.127.0/24")
	// GatewayIP is the host side: default route and DNS server.
	GatewayIP = netip.MustParseAddr("192.168.127.1")
	// BoxIP is the box's static address.
	BoxIP = netip.MustParseAddr("192.168.127.2")
	// HostWindow is where the box sees the host's loopback: 198.18.a.b is
	// the host's 127.0.a.b (198.18.0.0/15 is reserved for benchmarks and
	// never routed on the internet). Connections there are subject to the
	// egress policy like any other.
	HostWindow = netip.MustParsePrefix("198.18.0.0/16")
	// HostAlias names the host's 127.0.0.1 in the box's DNS.
	HostAlias = "host.boxlite.internal"
)

// MAC addresses of the link.
const (
	GatewayMAC = "5a:94:ef:e4:0c:dd"
	BoxMAC     = "5a:94:ef:e4:0c:ee"
)

// MTU of the box's link.
const MTU = 65520

// nicID is the stack's only NIC.
const nicID = 1

// dialTimeout bounds a connection the host makes for the box.
const dialTimeout = 15 * time.Second

// sniffWait is how long a connection allowed only by a host name rule may
// take to send its first bytes (a TLS ClientHello or HTTP request head)
// before it is let through without them.
const sniffWait = 500 * time.Millisecond

// udpIdle ends a UDP flow nobody used for that long.
const udpIdle = 90 * time.Second

// Config describes one box's network.
type Config struct {
	// Policy decides where the box may connect; nil means open egress.
	Policy *Policy
	// Hosts are static DNS answers (docker's --add-host); HostAlias is
	// always present.
	Hosts map[string]netip.Addr
	// Lookup resolves names not in Hosts; nil uses the host's resolver.
	Lookup func(ctx context.Context, name string) ([]netip.Addr, error)
	// Ports are forwarded from the host to the box.
	Ports []Port
	// Audit receives every egress decision; nil drops them.
	Audit func(Event)
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Network is one box's user-mode network: a gVisor TCP/IP stack acting as
// the box's gateway, NAT to the host's sockets under the egress policy, a
// DNS server, and host port forwards.
type Network struct {
	cfg    Config
	policy *Policy
	log    *slog.Logger
	stack  *stack.Stack
	sw     *tap.Switch
	dns    *DNSServer
	ports  []Port
	fwd    []io.Closer

	names nameTable

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// New builds the network and binds its host ports. A port that cannot be
// bound fails with errdefs.ErrPortInUse or errdefs.ErrPermission; nothing
// stays bound on error.
func New(cfg Config) (_ *Network, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var policy Policy
	if cfg.Policy != nil {
		policy = *cfg.Policy
	} else {
		p, _ := ParsePolicy(nil)
		policy = *p
	}
	policy.Internal = Subnet
	ctx, cancel := context.WithCancel(context.Background())
	n := &Network{cfg: cfg, policy: &policy, log: log, ctx: ctx, cancel: cancel}
	n.names.init()
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	ep, err := tap.NewLinkEndpoint(false, MTU, GatewayMAC, GatewayIP.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("network: link: %w", err)
	}
	n.sw = tap.NewSwitch(false)
	ep.Connect(n.sw)
	n.sw.Connect(ep)
	if n.stack, err = newStack(ep); err != nil {
		return nil, err
	}
	n.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(n.stack, 0, 64, n.forwardTCP).HandlePacket)
	n.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(n.stack, n.forwardUDP).HandlePacket)

	if err := n.startDNS(); err != nil {
		return nil, err
	}
	if err := n.bindPorts(cfg.Ports); err != nil {
		return nil, err
	}
	return n, nil
}

func newStack(ep stack.LinkEndpoint) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)
	if err := s.CreateNIC(nicID, ep); err != nil {
		return nil, fmt.Errorf("network: nic: %s", err)
	}
	if err := s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpipAddr(GatewayIP).WithPrefix(),
	}, stack.AddressProperties{}); err != nil {
		return nil, fmt.Errorf("network: gateway address: %s", err)
	}
	// The gateway answers for every destination: the forwarders see
	// each connection the box opens, wherever it goes.
	s.SetSpoofing(nicID, true)
	s.SetPromiscuousMode(nicID, true)
	sub, err := tcpip.NewSubnet(tcpipAddr(Subnet.Addr()), tcpip.MaskFromBytes(net.CIDRMask(Subnet.Bits(), 32)))
	if err != nil {
		return nil, fmt.Errorf("network: subnet: %w", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: nicID}})
	return s, nil
}

// ServeQEMU carries the box's frames over conn, QEMU's -netdev stream
// connection, until it breaks or the network closes.
func (n *Network) ServeQEMU(conn net.Conn) error {
	go func() {
		<-n.ctx.Done()
		conn.Close()
	}()
	err := n.sw.Accept(n.ctx, conn, types.QemuProtocol)
	if n.closed.Load() {
		return nil
	}
	return err
}

// Ports returns the forwarded ports, host ports resolved (port 0 asked
// for one the system picked).
func (n *Network) Ports() []Port { return append([]Port(nil), n.ports...) }

// Stats returns the bytes the box received and sent.
func (n *Network) Stats() (rx, tx uint64) {
	// The switch counts from its side: what it sent went to the box.
	return atomic.LoadUint64(&n.sw.Sent), atomic.LoadUint64(&n.sw.Received)
}

// Close stops the network: forwards, DNS and every connection.
func (n *Network) Close() {
	if n.closed.Swap(true) {
		return
	}
	n.cancel()
	for _, c := range n.fwd {
		c.Close()
	}
	if n.dns != nil {
		n.dns.Close()
	}
	if n.stack != nil {
		n.stack.Close()
	}
	n.wg.Wait()
}

func (n *Network) startDNS() error {
	hosts := map[string]netip.Addr{HostAlias: netip.MustParseAddr("127.0.0.1")}
	for k, v := range n.cfg.Hosts {
		hosts[k] = v
	}
	n.dns = NewDNS(DNSConfig{
		Policy:    n.policy,
		Hosts:     hosts,
		Lookup:    n.cfg.Lookup,
		MapAnswer: BoxView,
		Observe: func(name string, _, boxAddr netip.Addr) {
			n.names.add(boxAddr, name)
		},
		Audit: n.audit,
	})
	gw := tcpip.FullAddress{NIC: nicID, Addr: tcpipAddr(GatewayIP), Port: 53}
	pc, err := gonet.DialUDP(n.stack, &gw, nil, ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("network: dns: %w", err)
	}
	l, err := gonet.ListenTCP(n.stack, gw, ipv4.ProtocolNumber)
	if err != nil {
		pc.Close()
		return fmt.Errorf("network: dns: %w", err)
	}
	n.goServe(func() error { return n.dns.ServePacket(pc) })
	n.goServe(func() error { return n.dns.ServeListener(l) })
	return nil
}

func (n *Network) goServe(f func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := f(); err != nil && !n.closed.Load() {
			n.log.Error("network service", "err", err)
		}
	}()
}

func (n *Network) audit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if !e.Allow {
		n.log.Info("egress denied", "proto", e.Proto, "dst", e.Dst, "host", e.Host, "reason", e.Reason)
	}
	if n.cfg.Audit != nil {
		n.cfg.Audit(e)
	}
}

// decide applies the policy to a connection the box opens to boxDst.
func (n *Network) decide(proto string, boxDst netip.Addr, port uint16) (netip.AddrPort, []string, Verdict) {
	real := RealDest(boxDst)
	names := n.names.get(boxDst)
	v := n.policy.Decide(real, names)
	host := ""
	if v.ByName != "" {
		host = v.ByName
	} else if len(names) > 0 {
		host = names[0]
	}
	dst := netip.AddrPortFrom(real, port)
	if !v.Allow || v.ByName == "" || proto == "udp" {
		n.audit(Event{Proto: proto, Dst: dst.String(), Host: host, Allow: v.Allow, Reason: v.Reason})
	}
	return dst, names, v
}

// forwardTCP handles a connection the box opens: policy, then a host
// socket to the real destination, then a byte pump.
func (n *Network) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	boxDst := netipAddr(id.LocalAddress)
	dst, _, v := n.decide("tcp", boxDst, id.LocalPort)
	if !v.Allow {
		r.Complete(true) // a reset: refused at once, no timeout
		return
	}
	var out net.Conn
	if v.ByName == "" {
		// Dial first, so a refused destination refuses the box too.
		c, err := n.dial("tcp", dst)
		if err != nil {
			r.Complete(true)
			return
		}
		out = c
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		if out != nil {
			out.Close()
		}
		return
	}
	in := gonet.NewTCPConn(&wq, ep)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if out == nil {
			// Allowed by a host name only: the name the client
			// speaks (TLS SNI, HTTP Host) must be allowed too.
			var first []byte
			var ok bool
			first, ok = n.checkHost(in, dst, v)
			if !ok {
				in.Close()
				return
			}
			c, err := n.dial("tcp", dst)
			if err != nil {
				in.Close()
				return
			}
			if _, err := c.Write(first); err != nil {
				in.Close()
				c.Close()
				return
			}
			out = c
		}
		pump(n.ctx, in, out)
	}()
}

// checkHost reads the first bytes of a connection allowed by name rule
// v.ByName and checks the host name they carry. It returns those bytes.
func (n *Network) checkHost(in net.Conn, dst netip.AddrPort, v Verdict) ([]byte, bool) {
	buf := make([]byte, 0, 4096)
	deadline := time.Now().Add(sniffWait)
	host, proto := "", ""
	for {
		in.SetReadDeadline(deadline)
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		k, err := in.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		h, p, more := SniffHost(buf)
		if !more || err != nil {
			host, proto = h, p
			break
		}
	}
	in.SetReadDeadline(time.Time{})
	e := Event{Proto: "tcp", Dst: dst.String(), Host: v.ByName, Allow: true, Reason: "name " + v.ByName}
	if host != "" && !n.policy.AllowName(host) {
		e.Host, e.Allow, e.Reason = host, false, proto+" name not listed"
	} else if host != "" {
		e.Host = host
	}
	n.audit(e)
	return buf, e.Allow
}

func (n *Network) dial(network string, dst netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(n.ctx, network, dst.String())
	if err != nil {
		n.log.Debug("dial", "dst", dst, "err", err)
	}
	return c, err
}

// forwardUDP handles a new UDP flow from the box.
func (n *Network) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	boxDst := netipAddr(id.LocalAddress)
	if boxDst == netip.IPv4Unspecified() || boxDst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return
	}
	dst, _, v := n.decide("udp", boxDst, id.LocalPort)
	if !v.Allow {
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		return
	}
	in := gonet.NewUDPConn(&wq, ep)
	out, err := n.dial("udp", dst)
	if err != nil {
		in.Close()
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		relayUDP(n.ctx, in, out)
	}()
}

// relayUDP copies datagrams both ways until the flow idles or ctx ends.
func relayUDP(ctx context.Context, a, b net.Conn) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	var wg sync.WaitGroup
	copyDgrams := func(dst, src net.Conn) {
		defer wg.Done()
		// Either direction ending ends the flow.
		defer a.Close()
		defer b.Close()
		buf := make([]byte, 65535)
		for {
			src.SetReadDeadline(time.Now().Add(udpIdle))
			k, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < udpIdle {
					continue
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					continue
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:k]); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
				return
			}
		}
	}
	wg.Add(2)
	go copyDgrams(b, a)
	go copyDgrams(a, b)
	wg.Wait()
}

// halfCloser is a connection whose sending side can be closed alone.
type halfCloser interface{ CloseWrite() error }

// pump copies both ways, passing each side's EOF on as a half close, and
// closes both when both directions are done or ctx ends.
func pump(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cp(a, b)
	}()
	cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// BoxView is the address the box sees for a real address: the host's
// loopback appears in HostWindow.
func BoxView(real netip.Addr) netip.Addr {
	real = real.Unmap()
	if real.Is4() {
		b := real.As4()
		if b[0] == 127 && b[1] == 0 {
			w := HostWindow.Addr().As4()
			return netip.AddrFrom4([4]byte{w[0], w[1], b[2], b[3]})
		}
	}
	return real
}

// RealDest is the address the host dials for a box destination: the
// inverse of BoxView.
func RealDest(boxDst netip.Addr) netip.Addr {
	boxDst = boxDst.Unmap()
	if HostWindow.Contains(boxDst) {
		b := boxDst.As4()
		return netip.AddrFrom4([4]byte{127, 0, b[2], b[3]})
	}
	return boxDst
}

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFrom4(a.As4()) }

func netipAddr(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// nameTable remembers which DNS names the box was given for an address, so
// host name rules apply to connections made to that address.
type nameTable struct {
	mu sync.Mutex
	m  map[netip.Addr]map[string]time.Time
}

// nameTTL is how long a DNS answer counts for connections: longer than
// its TTL, since programs cache answers.
const nameTTL = 30 * time.Minute

// maxNames bounds the table; the stalest address goes first.
const maxNames = 4096

func (t *nameTable) init() { t.m = map[netip.Addr]map[string]time.Time{} }

func (t *nameTable) add(a netip.Addr, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[a] == nil {
		if len(t.m) >= maxNames {
			t.evictLocked()
		}
		t.m[a] = map[string]time.Time{}
	}
	t.m[a][name] = time.Now().Add(nameTTL)
}

func (t *nameTable) evictLocked() {
	var oldest netip.Addr
	var oldestT time.Time
	for a, names := range t.m {
		for _, exp := range names {
			if oldestT.IsZero() || exp.Before(oldestT) {
				oldest, oldestT = a, exp
			}
		}
	}
	delete(t.m, oldest)
}

func (t *nameTable) get(a netip.Addr) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	now := time.Now()
	for name, exp := range t.m[a] {
		if now.Before(exp) {
			out = append(out, name)
		}
	}
	return out
}

// Port is one host-to-box port forward.
type Port struct {
	// Proto is "tcp" or "udp".
	Proto string `json:"proto"`
	// HostIP is the host address to listen on; "" means 127.0.0.1.
	HostIP string `json:"hostIP,omitempty"`
	// HostPort 0 picks a free port.
	HostPort int `json:"hostPort"`
	BoxPort  int `json:"boxPort"`
}

func (p Port) String() string {
	ip := p.HostIP
	if ip == "" {
		ip = "127.0.0.1"
	}
	return net.JoinHostPort(ip, strconv.Itoa(p.HostPort)) + "->" + strconv.Itoa(p.BoxPort) + "/" + p.Proto
}

// bindError types a failure to bind a host port.
func bindError(p Port, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("network: port %s: host port %d is already in use: %w", p, p.HostPort, errdefs.ErrPortInUse)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("network: port %s: binding host port %d needs privileges (ports below 1024 need root or CAP_NET_BIND_SERVICE): %w", p, p.HostPort, errdefs.ErrPermission)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("network: port %s: %s is not an address of this host: %w", p, p.HostIP, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("network: port %s: %w", p, err)
}

// ValidHostName reports whether s is a DNS host name a box may be given
// an answer for.
func ValidHostName(s string) bool {
	_, ok := canonicalName(s)
	return ok
}
