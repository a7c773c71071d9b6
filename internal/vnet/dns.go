package vnet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// dnsTTL is the TTL, in seconds, of every answer the box is given.
const dnsTTL = 60

// dnsLookupTimeout bounds one upstream lookup.
const dnsLookupTimeout = 5 * time.Second

// DNSConfig configures a box's DNS server.
type DNSConfig struct {
	// Policy decides which names the box may resolve; nil allows all.
	Policy *Policy
	// Hosts are static answers (docker's --add-host), looked up before
	// Lookup. Keys are lower-case names without a trailing dot.
	Hosts map[string]netip.Addr
	// Lookup resolves a name not in Hosts to its IPv4 addresses. An
	// error that is a *net.DNSError with IsNotFound, or wraps
	// errdefs.ErrNotFound, answers NXDOMAIN; any other, SERVFAIL. Each
	// call has a 5 s deadline. nil uses the host's resolver.
	Lookup func(ctx context.Context, name string) ([]netip.Addr, error)
	// MapAnswer rewrites an answer into the address the box sees (the
	// network shows the host's loopback in a window); nil keeps it.
	MapAnswer func(netip.Addr) netip.Addr
	// Observe is called for every A answer given: the name, the real
	// address, and the address the box was given.
	Observe func(name string, real, boxAddr netip.Addr)
	// Audit receives an event for every A query allowed and every
	// query refused; nil drops them.
	Audit func(Event)
}

// DNSServer is a box's DNS server, served on the gateway address over UDP
// and TCP. It answers A queries for the names the policy allows and
// refuses the rest; the box network is IPv4 only, so other types of
// query for allowed names get empty answers.
type DNSServer struct {
	cfg     DNSConfig
	hosts   map[string]netip.Addr
	timeout time.Duration

	ctx    context.Context // ends on Close, cancelling lookups
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	servers []*dns.Server
	conns   []io.Closer
}

// NewDNS returns a DNS server for cfg; nothing is served until
// ServePacket or ServeListener.
func NewDNS(cfg DNSConfig) *DNSServer {
	if cfg.Lookup == nil {
		cfg.Lookup = func(ctx context.Context, name string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
		}
	}
	if cfg.MapAnswer == nil {
		cfg.MapAnswer = func(a netip.Addr) netip.Addr { return a }
	}
	hosts := make(map[string]netip.Addr, len(cfg.Hosts))
	for name, addr := range cfg.Hosts {
		hosts[strings.ToLower(strings.TrimSuffix(name, "."))] = addr
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &DNSServer{cfg: cfg, hosts: hosts, timeout: dnsLookupTimeout, ctx: ctx, cancel: cancel}
}

// ServePacket answers queries arriving on pc (UDP) until Close, then
// returns nil. It closes pc.
func (s *DNSServer) ServePacket(pc net.PacketConn) error {
	return s.serve(&dns.Server{PacketConn: pc, Net: "udp"}, pc)
}

// ServeListener answers queries on the connections l accepts (TCP) until
// Close, then returns nil. It closes l.
func (s *DNSServer) ServeListener(l net.Listener) error {
	return s.serve(&dns.Server{Listener: l, Net: "tcp"}, l)
}

func (s *DNSServer) serve(srv *dns.Server, c io.Closer) error {
	srv.Handler = dns.HandlerFunc(s.handle)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return nil
	}
	s.servers = append(s.servers, srv)
	s.conns = append(s.conns, c)
	s.mu.Unlock()

	err := srv.ActivateAndServe()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	return err
}

// Close stops serving, cancels lookups in flight and closes the
// connections given to ServePacket and ServeListener.
func (s *DNSServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	servers, conns := s.servers, s.conns
	s.mu.Unlock()

	s.cancel()
	for i, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.ShutdownContext(ctx) // fails if not started yet: closing c ends it then
		cancel()
		conns[i].Close()
	}
	return nil
}

func (s *DNSServer) handle(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	m.Compress = true
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
	default:
		s.answer(m, req.Question[0])
	}

	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		m.SetEdns0(uint16(size), false)
	}
	if w.RemoteAddr().Network() != "tcp" {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer fills m, the reply to question q.
func (s *DNSServer) answer(m *dns.Msg, q dns.Question) {
	if q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		return
	}
	name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
	if !s.cfg.Policy.AllowName(name) {
		m.Rcode = dns.RcodeRefused
		s.audit(name, false, "not listed")
		return
	}
	if _, ok := canonicalName(name); !ok {
		m.Rcode = dns.RcodeNameError
		return
	}
	if q.Qtype != dns.TypeA {
		return // the box network is IPv4: no other answers
	}

	addrs, err := s.resolve(name)
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
		reason := "servfail"
		if isNotFound(err) {
			m.Rcode, reason = dns.RcodeNameError, "nxdomain"
		}
		s.audit(name, true, reason)
		return
	}
	seen := map[netip.Addr]bool{}
	for _, real := range addrs {
		real = real.Unmap()
		boxAddr := s.cfg.MapAnswer(real).Unmap()
		if !real.Is4() || !boxAddr.Is4() || seen[boxAddr] {
			continue
		}
		seen[boxAddr] = true
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: dnsTTL},
			A:   boxAddr.AsSlice(),
		})
		if s.cfg.Observe != nil {
			s.cfg.Observe(name, real, boxAddr)
		}
	}
	reason := "open"
	if rule := s.cfg.Policy.nameRule(name); rule != "" {
		reason = "rule " + rule
	}
	s.audit(name, true, reason)
}

// resolve looks name up in Hosts, then upstream.
func (s *DNSServer) resolve(name string) ([]netip.Addr, error) {
	if addr, ok := s.hosts[name]; ok {
		return []netip.Addr{addr}, nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	return s.cfg.Lookup(ctx, name)
}

func (s *DNSServer) audit(name string, allow bool, reason string) {
	if s.cfg.Audit != nil {
		s.cfg.Audit(Event{Time: time.Now(), Proto: "dns", Host: name, Allow: allow, Reason: reason})
	}
}

// isNotFound reports whether a lookup error means the name does not exist.
func isNotFound(err error) bool {
	var dnsErr *net.DNSError
	return (errors.As(err, &dnsErr) && dnsErr.IsNotFound) || errors.Is(err, errdefs.ErrNotFound)
}
