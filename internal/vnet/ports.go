package vnet

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/containers/gvisor-tap-vsock/pkg/services/forwarder"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// ParsePort parses docker's -p syntax: [HOSTIP:]HOSTPORT:BOXPORT[/tcp|/udp]
// (an IPv6 HOSTIP in brackets). HOSTPORT 0 picks a free port.
func ParsePort(s string) (Port, error) {
	bad := func(why string) (Port, error) {
		return Port{}, fmt.Errorf("port %q: %s (want [HOSTIP:]HOSTPORT:BOXPORT[/udp]): %w", s, why, errdefs.ErrInvalidArgument)
	}
	spec, proto, hasProto := strings.Cut(s, "/")
	p := Port{Proto: "tcp"}
	if hasProto {
		if proto != "tcp" && proto != "udp" {
			return bad("protocol must be tcp or udp")
		}
		p.Proto = proto
	}
	var hostPart, boxPart string
	if rest, ok := strings.CutPrefix(spec, "["); ok {
		ip, ports, ok := strings.Cut(rest, "]:")
		if !ok || ip == "" {
			return bad("unbalanced brackets around the host address")
		}
		p.HostIP = ip
		if hostPart, boxPart, ok = strings.Cut(ports, ":"); !ok {
			return bad("no box port")
		}
	} else {
		parts := strings.Split(spec, ":")
		switch len(parts) {
		case 2:
			hostPart, boxPart = parts[0], parts[1]
		case 3:
			p.HostIP, hostPart, boxPart = parts[0], parts[1], parts[2]
			if p.HostIP == "" {
				return bad("empty host address")
			}
		default:
			return bad("want two or three fields (an IPv6 host address goes in brackets)")
		}
	}
	var err error
	if p.HostPort, err = portNumber(hostPart, true); err != nil {
		return bad("host port: " + err.Error())
	}
	if p.BoxPort, err = portNumber(boxPart, false); err != nil {
		return bad("box port: " + err.Error())
	}
	if why := p.problem(); why != "" {
		return bad(why)
	}
	return p, nil
}

func portNumber(s string, zeroOK bool) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if n > 65535 || n < 0 || (n == 0 && !zeroOK) {
		return 0, fmt.Errorf("%d is out of range", n)
	}
	return n, nil
}

// Validate checks a Port built by hand.
func (p Port) Validate() error {
	if why := p.problem(); why != "" {
		return fmt.Errorf("port %s: %s: %w", p, why, errdefs.ErrInvalidArgument)
	}
	return nil
}

// problem says what is wrong with p, or "".
func (p Port) problem() string {
	switch {
	case p.Proto != "tcp" && p.Proto != "udp":
		return "protocol must be tcp or udp"
	case p.HostPort < 0 || p.HostPort > 65535:
		return "host port out of range"
	case p.BoxPort < 1 || p.BoxPort > 65535:
		return "box port out of range"
	}
	if p.HostIP != "" {
		if _, err := netip.ParseAddr(p.HostIP); err != nil {
			return fmt.Sprintf("host address %q is not an IP address", p.HostIP)
		}
	}
	return ""
}

// bindPorts listens on every forwarded host port and pumps what arrives
// to the box. All are bound before any serves, so a taken port fails the
// whole set.
func (n *Network) bindPorts(ports []Port) error {
	type bound struct {
		p  Port
		l  net.Listener
		pc *net.UDPConn
	}
	var all []bound
	ok := false
	defer func() {
		if ok {
			return
		}
		for _, b := range all {
			if b.l != nil {
				b.l.Close()
			}
			if b.pc != nil {
				b.pc.Close()
			}
		}
	}()
	seen := map[string]bool{}
	for _, p := range ports {
		if err := p.Validate(); err != nil {
			return err
		}
		if p.HostIP == "" {
			p.HostIP = "127.0.0.1"
		}
		addr := net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
		if p.HostPort != 0 {
			if seen[p.Proto+addr] {
				return fmt.Errorf("network: port %s is forwarded twice: %w", p, errdefs.ErrInvalidArgument)
			}
			seen[p.Proto+addr] = true
		}
		b := bound{p: p}
		var err error
		if p.Proto == "tcp" {
			b.l, err = net.Listen("tcp", addr)
			if err == nil {
				b.p.HostPort = b.l.Addr().(*net.TCPAddr).Port
			}
		} else {
			var ua *net.UDPAddr
			if ua, err = net.ResolveUDPAddr("udp", addr); err == nil {
				b.pc, err = net.ListenUDP("udp", ua)
			}
			if err == nil {
				b.p.HostPort = b.pc.LocalAddr().(*net.UDPAddr).Port
			}
		}
		if err != nil {
			return bindError(p, err)
		}
		all = append(all, b)
	}
	ok = true
	for _, b := range all {
		n.ports = append(n.ports, b.p)
		box := tcpip.FullAddress{NIC: nicID, Addr: tcpipAddr(BoxIP), Port: uint16(b.p.BoxPort)}
		if b.l != nil {
			n.fwd = append(n.fwd, b.l)
			l := b.l
			n.goServe(func() error { return n.serveTCPForward(l, box) })
			continue
		}
		proxy, err := forwarder.NewUDPProxy(b.pc, func() (net.Conn, error) {
			return gonet.DialUDP(n.stack, nil, &box, ipv4.ProtocolNumber)
		})
		if err != nil {
			return err
		}
		n.fwd = append(n.fwd, proxy)
		n.goServe(func() error { proxy.Run(); return nil })
	}
	return nil
}

// serveTCPForward accepts host connections on l and connects each to the
// box's port.
func (n *Network) serveTCPForward(l net.Listener, box tcpip.FullAddress) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if n.closed.Load() {
				return nil
			}
			return err
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			in, err := gonet.DialContextTCP(n.ctx, n.stack, box, ipv4.ProtocolNumber)
			if err != nil {
				c.Close()
				return
			}
			pump(n.ctx, c, in)
		}()
	}
}
