package vnet

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func mustPolicy(t testing.TB, entries ...string) *Policy {
	t.Helper()
	p, err := ParsePolicy(entries)
	if err != nil {
		t.Fatal(err)
	}
	p.Internal = netip.MustParsePrefix("192.168.127.0/24")
	return p
}

func TestParsePolicyEntries(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		want    []string
		open    bool
	}{
		{"nil is open", nil, []string{"*"}, true},
		{"empty is open", []string{}, []string{"*"}, true},
		{"star", []string{"*"}, []string{"*"}, true},
		{"star among others", []string{"a.com", "*"}, []string{"a.com", "*"}, true},
		{"name canonical", []string{"API.Example.COM."}, []string{"api.example.com"}, false},
		{"dedupe names", []string{"a.com", "A.com", "a.com."}, []string{"a.com"}, false},
		{"wildcard", []string{"*.Example.com."}, []string{"*.example.com"}, false},
		{"single label", []string{"localhost"}, []string{"localhost"}, false},
		{"underscore", []string{"_svc.example.com"}, []string{"_svc.example.com"}, false},
		{"host alias", []string{"host.boxlite.internal"}, []string{"host.boxlite.internal"}, false},
		{"ipv4", []string{"203.0.113.7"}, []string{"203.0.113.7"}, false},
		{"ipv6 lower case", []string{"2001:DB8::1"}, []string{"2001:db8::1"}, false},
		{"mapped address", []string{"::ffff:10.1.2.3"}, []string{"10.1.2.3"}, false},
		{"cidr", []string{"10.0.0.0/8", "2001:db8::/32"}, []string{"10.0.0.0/8", "2001:db8::/32"}, false},
		{"cidr masked", []string{"10.1.2.3/8"}, []string{"10.0.0.0/8"}, false},
		{"host prefix is an address", []string{"10.1.2.3/32", "10.1.2.3"}, []string{"10.1.2.3"}, false},
		{"mapped cidr", []string{"::ffff:10.0.0.0/104"}, []string{"10.0.0.0/8"}, false},
		{"everything v4", []string{"0.0.0.0/0"}, []string{"0.0.0.0/0"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy(tt.entries)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Entries(); !slices.Equal(got, tt.want) {
				t.Errorf("Entries = %q, want %q", got, tt.want)
			}
			if p.Open() != tt.open {
				t.Errorf("Open = %v, want %v", p.Open(), tt.open)
			}
			again, err := ParsePolicy(p.Entries())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, again) {
				t.Errorf("re-parsed policy differs: %+v, want %+v", again, p)
			}
		})
	}
}

func TestParsePolicyInvalid(t *testing.T) {
	for _, entry := range []string{
		"",
		" ",
		"a.com ",
		"a b.com",
		"*.",
		"**",
		"*.*.com",
		"*foo.com",
		"foo.*.com",
		"a..b",
		".a.com",
		"a.com..",
		"-a.com",
		"a-.com",
		"a.com:443",
		"[::1]:443",
		"1.2.3.4:80",
		"http://x",
		"x/y",
		"1.2.3.4/33",
		"2001:db8::/129",
		"10.0.0.0/",
		"1.2.3",
		"1.2.3.4.5",
		"01.2.3.4",
		"256.1.1.1",
		"fe80::1%eth0",
		"ex\u00e4mple.com",
		"a_b.c@d",
		strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 26) + "com",
	} {
		t.Run(entry, func(t *testing.T) {
			_, err := ParsePolicy([]string{"ok.example.com", entry})
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("ParsePolicy(%q) = %v, want ErrInvalidArgument", entry, err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(entry)) {
				t.Errorf("error %q does not name the entry", err)
			}
		})
	}
}

func TestAllowName(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		query   string
		want    bool
	}{
		{"open allows any", nil, "anything.example", true},
		{"open allows even junk", []string{"*"}, "not a name", true},
		{"exact", []string{"api.example.com"}, "api.example.com", true},
		{"exact case", []string{"api.example.com"}, "API.Example.Com", true},
		{"exact trailing dot", []string{"api.example.com"}, "api.example.com.", true},
		{"exact not parent", []string{"api.example.com"}, "example.com", false},
		{"exact not child", []string{"api.example.com"}, "x.api.example.com", false},
		{"wildcard child", []string{"*.example.com"}, "a.example.com", true},
		{"wildcard deep", []string{"*.example.com"}, "a.b.c.example.com", true},
		{"wildcard trailing dot", []string{"*.example.com"}, "A.EXAMPLE.COM.", true},
		{"wildcard not apex", []string{"*.example.com"}, "example.com", false},
		{"wildcard not suffix", []string{"*.example.com"}, "badexample.com", false},
		{"wildcard not other", []string{"*.example.com"}, "example.com.evil.net", false},
		{"host alias", []string{"host.boxlite.internal"}, "host.boxlite.internal", true},
		{"ip entry is no name", []string{"10.0.0.1"}, "10.0.0.1", false},
		{"empty name", []string{"a.com"}, "", false},
		{"root", []string{"a.com"}, ".", false},
		{"junk", []string{"a.com"}, "a.com\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPolicy(t, tt.entries...)
			if got := p.AllowName(tt.query); got != tt.want {
				t.Errorf("AllowName(%q) = %v, want %v", tt.query, got, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		name    string
		entries []string
		dst     string
		names   []string
		want    Verdict
	}{
		// Always denied.
		{"metadata open", []string{"*"}, "169.254.169.254", nil, Verdict{Reason: "metadata"}},
		{"metadata listed", []string{"169.254.169.254"}, "169.254.169.254", nil, Verdict{Reason: "metadata"}},
		{"metadata cidr listed", []string{"169.254.0.0/16"}, "169.254.1.1", nil, Verdict{Reason: "metadata"}},
		{"metadata by name", []string{"metadata.google.internal"}, "169.254.169.254", []string{"metadata.google.internal"}, Verdict{Reason: "metadata"}},
		{"metadata mapped", []string{"*"}, "::ffff:169.254.169.254", nil, Verdict{Reason: "metadata"}},
		{"link-local v6", []string{"*"}, "fe80::1", nil, Verdict{Reason: "metadata"}},
		{"link-local v6 zoned", []string{"*"}, "fe80::1%eth0", nil, Verdict{Reason: "metadata"}},
		{"ec2 v6 metadata", []string{"fd00:ec2::/32"}, "fd00:ec2::254", nil, Verdict{Reason: "metadata"}},
		{"unspecified v4", []string{"*"}, "0.0.0.0", nil, Verdict{Reason: "unspecified"}},
		{"this network", []string{"0.0.0.0/0"}, "0.1.2.3", nil, Verdict{Reason: "unspecified"}},
		{"unspecified v6", []string{"*"}, "::", nil, Verdict{Reason: "unspecified"}},
		{"multicast v4", []string{"224.0.0.0/4"}, "224.0.0.251", nil, Verdict{Reason: "multicast"}},
		{"multicast v6", []string{"*"}, "ff02::fb", nil, Verdict{Reason: "multicast"}},
		{"broadcast", []string{"*"}, "255.255.255.255", nil, Verdict{Reason: "broadcast"}},
		{"internal", []string{"*"}, "192.168.127.1", nil, Verdict{Reason: "internal"}},
		{"internal listed", []string{"192.168.127.0/24"}, "192.168.127.2", nil, Verdict{Reason: "internal"}},
		{"invalid", []string{"*"}, "", nil, Verdict{Reason: "invalid"}},

		// Loopback.
		{"loopback open", []string{"*"}, "127.0.0.1", nil, Verdict{Reason: "loopback"}},
		{"loopback other open", []string{"*"}, "127.0.0.2", nil, Verdict{Reason: "loopback"}},
		{"loopback v6 open", []string{"*"}, "::1", nil, Verdict{Reason: "loopback"}},
		{"loopback mapped open", []string{"*"}, "::ffff:127.0.0.1", nil, Verdict{Reason: "loopback"}},
		{"loopback all v4", []string{"0.0.0.0/0"}, "127.0.0.1", nil, Verdict{Reason: "loopback"}},
		{"loopback wide cidr", []string{"64.0.0.0/2"}, "127.0.0.1", nil, Verdict{Reason: "loopback"}},
		{"loopback all v6", []string{"::/0"}, "::1", nil, Verdict{Reason: "loopback"}},
		{"loopback listed", []string{"127.0.0.1"}, "127.0.0.1", nil, Verdict{Allow: true, Reason: "rule 127.0.0.1"}},
		{"loopback listed other", []string{"127.0.0.1"}, "127.0.0.2", nil, Verdict{Reason: "loopback"}},
		{"loopback cidr", []string{"127.0.0.0/8"}, "127.3.2.1", nil, Verdict{Allow: true, Reason: "rule 127.0.0.0/8"}},
		{"loopback v6 listed", []string{"::1"}, "::1", nil, Verdict{Allow: true, Reason: "rule ::1"}},
		{"loopback mapped listed", []string{"::ffff:127.0.0.1"}, "::ffff:127.0.0.1", nil, Verdict{Allow: true, Reason: "rule 127.0.0.1"}},
		{"host alias", []string{"host.boxlite.internal"}, "127.0.0.1", nil, Verdict{Allow: true, Reason: "rule host.boxlite.internal"}},
		{"host alias only .1", []string{"host.boxlite.internal"}, "127.0.0.2", nil, Verdict{Reason: "loopback"}},
		{"host alias not v6", []string{"host.boxlite.internal"}, "::1", nil, Verdict{Reason: "loopback"}},
		{"loopback by name", []string{"*", "dev.local.test"}, "127.0.0.1", []string{"dev.local.test"}, Verdict{Allow: true, ByName: "dev.local.test", Reason: "rule dev.local.test"}},
		{"loopback not by wildcard", []string{"*.local.test"}, "127.0.0.5", []string{"a.local.test"}, Verdict{Reason: "loopback"}},
		{"loopback name not listed", []string{"*"}, "127.0.0.1", []string{"localhost"}, Verdict{Reason: "loopback"}},

		// Open.
		{"open", []string{"*"}, "203.0.113.7", nil, Verdict{Allow: true, Reason: "open"}},
		{"open by empty list", nil, "2001:db8::1", nil, Verdict{Allow: true, Reason: "open"}},

		// Addresses.
		{"ip listed", []string{"203.0.113.7"}, "203.0.113.7", nil, Verdict{Allow: true, Reason: "rule 203.0.113.7"}},
		{"ip mapped dst", []string{"203.0.113.7"}, "::ffff:203.0.113.7", nil, Verdict{Allow: true, Reason: "rule 203.0.113.7"}},
		{"ip not listed", []string{"203.0.113.7"}, "203.0.113.8", nil, Verdict{Reason: "not listed"}},
		{"cidr", []string{"10.0.0.0/8"}, "10.20.30.40", nil, Verdict{Allow: true, Reason: "rule 10.0.0.0/8"}},
		{"cidr outside", []string{"10.0.0.0/8"}, "11.0.0.1", nil, Verdict{Reason: "not listed"}},
		{"cidr v6", []string{"2001:db8::/32"}, "2001:db8:1::5", nil, Verdict{Allow: true, Reason: "rule 2001:db8::/32"}},
		{"v6 cidr not v4", []string{"::/0"}, "1.1.1.1", nil, Verdict{Reason: "not listed"}},
		{"all v4", []string{"0.0.0.0/0"}, "1.1.1.1", nil, Verdict{Allow: true, Reason: "rule 0.0.0.0/0"}},
		{"ip before name", []string{"a.example.com", "203.0.113.0/24"}, "203.0.113.7", []string{"a.example.com"}, Verdict{Allow: true, Reason: "rule 203.0.113.0/24"}},

		// Names.
		{"by name", []string{"api.example.com"}, "203.0.113.7", []string{"api.example.com"}, Verdict{Allow: true, ByName: "api.example.com", Reason: "rule api.example.com"}},
		{"by name case", []string{"api.example.com"}, "203.0.113.7", []string{"API.example.com."}, Verdict{Allow: true, ByName: "api.example.com", Reason: "rule api.example.com"}},
		{"by second name", []string{"api.example.com"}, "203.0.113.7", []string{"cdn.net", "api.example.com"}, Verdict{Allow: true, ByName: "api.example.com", Reason: "rule api.example.com"}},
		{"by wildcard deep", []string{"*.example.com"}, "203.0.113.7", []string{"a.b.example.com"}, Verdict{Allow: true, ByName: "*.example.com", Reason: "rule *.example.com"}},
		{"wildcard not apex", []string{"*.example.com"}, "203.0.113.7", []string{"example.com"}, Verdict{Reason: "not listed"}},
		{"name not listed", []string{"api.example.com"}, "203.0.113.7", []string{"evil.example.net"}, Verdict{Reason: "not listed"}},
		{"no names", []string{"api.example.com"}, "203.0.113.7", nil, Verdict{Reason: "not listed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPolicy(t, tt.entries...)
			var dst netip.Addr
			if tt.dst != "" {
				dst = addr(tt.dst)
			}
			if got := p.Decide(dst, tt.names); got != tt.want {
				t.Errorf("Decide(%s, %q) = %+v, want %+v", tt.dst, tt.names, got, tt.want)
			}
		})
	}
}

func TestNilPolicy(t *testing.T) {
	var p *Policy
	if !p.Open() || !p.AllowName("a.com") || !slices.Equal(p.Entries(), []string{"*"}) {
		t.Fatal("a nil policy is not open")
	}
	for dst, want := range map[string]Verdict{
		"1.1.1.1":         {Allow: true, Reason: "open"},
		"127.0.0.1":       {Reason: "loopback"},
		"169.254.169.254": {Reason: "metadata"},
	} {
		if got := p.Decide(netip.MustParseAddr(dst), nil); got != want {
			t.Errorf("Decide(%s) = %+v, want %+v", dst, got, want)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"", "*", "api.example.com", "*.example.com", "API.Example.COM.", "10.0.0.0/8",
		"2001:db8::/32", "::ffff:10.0.0.0/104", "host.boxlite.internal", "1.2.3.4/33",
		"a..b", "*.", "http://x", "a.com:443", "fe80::1%eth0", "127.0.0.1",
	} {
		f.Add(s, "a.com")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		p, err := ParsePolicy([]string{a, b})
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		again, err := ParsePolicy(p.Entries())
		if err != nil {
			t.Fatalf("entries %q do not re-parse: %v", p.Entries(), err)
		}
		if !reflect.DeepEqual(p, again) {
			t.Fatalf("entries %q re-parse to %+v, want %+v", p.Entries(), again, p)
		}
		for _, name := range []string{a, b} {
			p.AllowName(name)
		}
		if addr, err := netip.ParseAddr(a); err == nil {
			p.Decide(addr, []string{b})
		}
	})
}
