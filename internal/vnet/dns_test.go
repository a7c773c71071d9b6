package vnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// fakeResolver answers from a table and records what it was asked; it
// never reaches a real resolver.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	errs    map[string]error
	asked   []string
}

func (r *fakeResolver) lookup(ctx context.Context, name string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, name)
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("lookup without a deadline")
	}
	if err := r.errs[name]; err != nil {
		return nil, err
	}
	if a, ok := r.answers[name]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r *fakeResolver) questions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

// recorder collects Observe calls and audit events.
type recorder struct {
	mu       sync.Mutex
	observed []string
	events   []Event
}

func (r *recorder) observe(name string, real, boxAddr netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observed = append(r.observed, fmt.Sprintf("%s %s %s", name, real, boxAddr))
}

func (r *recorder) audit(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) take() ([]string, []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, e := r.observed, r.events
	r.observed, r.events = nil, nil
	return o, e
}

// startDNS serves s on a UDP socket and a TCP listener on 127.0.0.1 and
// returns their addresses; cleanup closes s and checks both Serve calls
// return nil.
func startDNS(t *testing.T, s *DNSServer) (udpAddr, tcpAddr string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- s.ServePacket(pc) }()
	go func() { errs <- s.ServeListener(l) }()
	t.Cleanup(func() {
		s.Close()
		for range 2 {
			select {
			case err := <-errs:
				if err != nil {
					t.Errorf("Serve after Close = %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return after Close")
			}
		}
	})
	return pc.LocalAddr().String(), l.Addr().String()
}

func query(t *testing.T, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s: %v", network, name, err)
	}
	return r
}

func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			out = append(out, rr.String())
			continue
		}
		out = append(out, fmt.Sprintf("%s %d %s", a.Hdr.Name, a.Hdr.Ttl, a.A))
	}
	return out
}

func TestDNS(t *testing.T) {
	addr := netip.MustParseAddr
	res := &fakeResolver{
		answers: map[string][]netip.Addr{
			"api.example.com": {addr("203.0.113.7"), addr("2001:db8::7"), addr("::ffff:203.0.113.8"), addr("203.0.113.7")},
			"a.b.example.com": {addr("203.0.113.9")},
			"local.example":   {addr("127.0.0.1")},
			"v6.example.com":  {addr("2001:db8::9")},
		},
		errs: map[string]error{
			"broken.example.com": errors.New("upstream unreachable"),
			"gone.example.com":   fmt.Errorf("lookup: %w", errdefs.ErrNotFound),
		},
	}
	rec := &recorder{}
	s := NewDNS(DNSConfig{
		Policy: mustPolicy(t, "api.example.com", "*.example.com", "local.example", "host.boxlite.internal", "10.0.0.0/8"),
		Hosts:  map[string]netip.Addr{"host.boxlite.internal": addr("127.0.0.1"), "Db.Example.com.": addr("10.1.2.3")},
		Lookup: res.lookup,
		MapAnswer: func(a netip.Addr) netip.Addr {
			if a == addr("127.0.0.1") {
				return addr("198.18.0.1")
			}
			return a
		},
		Observe: rec.observe,
		Audit:   rec.audit,
	})
	udpAddr, tcpAddr := startDNS(t, s)

	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		rcode    int
		answers  []string
		observed []string
		event    *Event
	}{
		{
			name: "lookup", qname: "api.example.com.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answers:  []string{"api.example.com. 60 203.0.113.7", "api.example.com. 60 203.0.113.8"},
			observed: []string{"api.example.com 203.0.113.7 203.0.113.7", "api.example.com 203.0.113.8 203.0.113.8"},
			event:    &Event{Proto: "dns", Host: "api.example.com", Allow: true, Reason: "rule api.example.com"},
		},
		{
			name: "case kept in answer", qname: "API.Example.COM.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answers:  []string{"API.Example.COM. 60 203.0.113.7", "API.Example.COM. 60 203.0.113.8"},
			observed: []string{"api.example.com 203.0.113.7 203.0.113.7", "api.example.com 203.0.113.8 203.0.113.8"},
			event:    &Event{Proto: "dns", Host: "api.example.com", Allow: true, Reason: "rule api.example.com"},
		},
		{
			name: "wildcard", qname: "a.b.example.com.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answers:  []string{"a.b.example.com. 60 203.0.113.9"},
			observed: []string{"a.b.example.com 203.0.113.9 203.0.113.9"},
			event:    &Event{Proto: "dns", Host: "a.b.example.com", Allow: true, Reason: "rule *.example.com"},
		},
		{
			name: "hosts", qname: "host.boxlite.internal.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answers:  []string{"host.boxlite.internal. 60 198.18.0.1"},
			observed: []string{"host.boxlite.internal 127.0.0.1 198.18.0.1"},
			event:    &Event{Proto: "dns", Host: "host.boxlite.internal", Allow: true, Reason: "rule host.boxlite.internal"},
		},
		{
			name: "hosts key normalized", qname: "db.example.com.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answers:  []string{"db.example.com. 60 10.1.2.3"},
			observed: []string{"db.example.com 10.1.2.3 10.1.2.3"},
			event:    &Event{Proto: "dns", Host: "db.example.com", Allow: true, Reason: "rule *.example.com"},
		},
		{
			name: "mapped upstream answer", qname: "local.example.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answers:  []string{"local.example. 60 198.18.0.1"},
			observed: []string{"local.example 127.0.0.1 198.18.0.1"},
			event:    &Event{Proto: "dns", Host: "local.example", Allow: true, Reason: "rule local.example"},
		},
		{
			name: "ipv6 only", qname: "v6.example.com.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			event: &Event{Proto: "dns", Host: "v6.example.com", Allow: true, Reason: "rule *.example.com"},
		},
		{
			name: "refused", qname: "evil.example.net.", qtype: dns.TypeA, rcode: dns.RcodeRefused,
			event: &Event{Proto: "dns", Host: "evil.example.net", Allow: false, Reason: "not listed"},
		},
		{
			name: "apex of wildcard refused", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused,
			event: &Event{Proto: "dns", Host: "example.com", Allow: false, Reason: "not listed"},
		},
		{
			name: "refused aaaa", qname: "evil.example.net.", qtype: dns.TypeAAAA, rcode: dns.RcodeRefused,
			event: &Event{Proto: "dns", Host: "evil.example.net", Allow: false, Reason: "not listed"},
		},
		{name: "aaaa empty", qname: "api.example.com.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess},
		{name: "mx empty", qname: "api.example.com.", qtype: dns.TypeMX, rcode: dns.RcodeSuccess},
		{
			name: "nxdomain", qname: "nope.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			event: &Event{Proto: "dns", Host: "nope.example.com", Allow: true, Reason: "nxdomain"},
		},
		{
			name: "not found sentinel", qname: "gone.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			event: &Event{Proto: "dns", Host: "gone.example.com", Allow: true, Reason: "nxdomain"},
		},
		{
			name: "servfail", qname: "broken.example.com.", qtype: dns.TypeA, rcode: dns.RcodeServerFailure,
			event: &Event{Proto: "dns", Host: "broken.example.com", Allow: true, Reason: "servfail"},
		},
	}
	for _, network := range []string{"udp", "tcp"} {
		server := udpAddr
		if network == "tcp" {
			server = tcpAddr
		}
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				r := query(t, network, server, tt.qname, tt.qtype)
				if r.Rcode != tt.rcode {
					t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if !r.RecursionAvailable || r.Id == 0 || len(r.Question) != 1 || r.Question[0].Name != tt.qname {
					t.Errorf("reply header: %v", r)
				}
				if got := answers(r); !slices.Equal(got, tt.answers) {
					t.Errorf("answers = %q, want %q", got, tt.answers)
				}
				observed, events := rec.take()
				if !slices.Equal(observed, tt.observed) {
					t.Errorf("observed = %q, want %q", observed, tt.observed)
				}
				var want []Event
				if tt.event != nil {
					want = []Event{*tt.event}
				}
				for i := range events {
					if events[i].Time.IsZero() {
						t.Errorf("event without a time: %+v", events[i])
					}
					events[i].Time = time.Time{}
				}
				if !slices.Equal(events, want) {
					t.Errorf("audit = %+v, want %+v", events, want)
				}
			})
		}
	}

	// Refused, non-A and Hosts names never reach the resolver.
	once := []string{"api.example.com", "api.example.com", "a.b.example.com", "local.example", "v6.example.com", "nope.example.com", "gone.example.com", "broken.example.com"}
	want := append(slices.Clone(once), once...)
	if got := res.questions(); !slices.Equal(got, want) {
		t.Errorf("resolver asked %q, want %q", got, want)
	}
}

func TestDNSProtocol(t *testing.T) {
	s := NewDNS(DNSConfig{
		Policy: mustPolicy(t, "*"),
		Lookup: func(ctx context.Context, name string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil
		},
	})
	udpAddr, _ := startDNS(t, s)
	c := dns.Client{Net: "udp", Timeout: 5 * time.Second}

	t.Run("class chaos", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("version.bind.", dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
		r, _, err := c.Exchange(m, udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeRefused {
			t.Errorf("rcode = %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("notify", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetNotify("example.com.")
		r, _, err := c.Exchange(m, udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNotImplemented {
			t.Errorf("rcode = %s, want NOTIMP", dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("edns", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("api.example.com.", dns.TypeA)
		m.SetEdns0(1232, false)
		r, _, err := c.Exchange(m, udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != 1232 {
			t.Errorf("reply OPT = %v, want size 1232", opt)
		}
		if got := answers(r); !slices.Equal(got, []string{"api.example.com. 60 203.0.113.7"}) {
			t.Errorf("answers = %q", got)
		}
	})
	t.Run("open policy, odd name", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion(`a\032b.example.`, dns.TypeA)
		r, _, err := c.Exchange(m, udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("rcode = %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
	})
}

func TestDNSNilPolicyAndDefaults(t *testing.T) {
	s := NewDNS(DNSConfig{
		Lookup: func(ctx context.Context, name string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil
		},
	})
	if s.timeout != 5*time.Second {
		t.Errorf("lookup timeout = %v, want 5s", s.timeout)
	}
	udpAddr, _ := startDNS(t, s)
	r := query(t, "udp", udpAddr, "anything.example.", dns.TypeA)
	if got := answers(r); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{"anything.example. 60 203.0.113.7"}) {
		t.Errorf("rcode %s, answers %q", dns.RcodeToString[r.Rcode], got)
	}
}

func TestDNSLookupTimeout(t *testing.T) {
	deadline := make(chan time.Duration, 1)
	s := NewDNS(DNSConfig{
		Policy: mustPolicy(t, "slow.example"),
		Lookup: func(ctx context.Context, name string) ([]netip.Addr, error) {
			d, _ := ctx.Deadline()
			deadline <- time.Until(d)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	s.timeout = 100 * time.Millisecond
	udpAddr, _ := startDNS(t, s)
	start := time.Now()
	r := query(t, "udp", udpAddr, "slow.example.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := <-deadline; d > 100*time.Millisecond {
		t.Errorf("lookup deadline %v away, want at most 100ms", d)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("reply took %v", took)
	}
}

func TestDNSCloseCancelsLookups(t *testing.T) {
	started := make(chan struct{})
	s := NewDNS(DNSConfig{
		Lookup: func(ctx context.Context, name string) ([]netip.Addr, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.ServePacket(pc) }()
	go func() {
		m := new(dns.Msg)
		m.SetQuestion("hang.example.", dns.TypeA)
		c := dns.Client{Net: "udp", Timeout: 2 * time.Second}
		c.Exchange(m, pc.LocalAddr().String())
	}()
	<-started
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close waited for a lookup")
	}
	if err := <-served; err != nil {
		t.Errorf("ServePacket = %v, want nil after Close", err)
	}
}

func TestDNSServeAfterClose(t *testing.T) {
	s := NewDNS(DNSConfig{})
	s.Close()
	s.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServePacket(pc); err != nil {
		t.Errorf("ServePacket after Close = %v, want nil", err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the connection is still open: %v", err)
	}
}
