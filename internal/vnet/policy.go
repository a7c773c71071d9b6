package vnet

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// hostAliasName is the policy entry and DNS name for the host's loopback
// address 127.0.0.1.
const hostAliasName = "host.boxlite.internal"

// openEntry is the policy entry that allows any destination.
const openEntry = "*"

// Addresses no policy can open.
var (
	metadata4   = netip.MustParsePrefix("169.254.0.0/16") // link-local, cloud metadata
	metadata6   = netip.MustParsePrefix("fe80::/10")      // link-local
	ec2Metadata = netip.MustParseAddr("fd00:ec2::254")    // AWS metadata over IPv6
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	broadcast4  = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	loopback4   = netip.MustParsePrefix("127.0.0.0/8")
	hostAddr    = netip.AddrFrom4([4]byte{127, 0, 0, 1})
)

// Policy is a box's egress allow-list: which names the box may resolve
// and which addresses it may connect to. A Policy is immutable once
// parsed, apart from Internal, which is set before first use; its methods
// are safe for concurrent use. A nil *Policy allows everything an open
// policy allows.
//
// Entries, as ParsePolicy accepts them:
//
//	api.example.com        the name, case-insensitive, trailing dot allowed
//	*.example.com          any name below example.com, at any depth
//	                       (a.example.com, a.b.example.com; not example.com)
//	203.0.113.7, 2001:db8::1       one address
//	10.0.0.0/8, 2001:db8::/32      a range of addresses
//	host.boxlite.internal  the host's loopback, 127.0.0.1
//	*                      any destination: open egress
//
// Some destinations are never allowed, whatever the list says (see
// Decide), and the host's loopback only when an entry names it.
type Policy struct {
	// Internal is the box network's own subnet; Decide denies every
	// address in it. The network sets it before the policy is used.
	Internal netip.Prefix

	entries   []string
	open      bool
	hostAlias bool
	names     map[string]bool // exact names, canonical
	wildcards map[string]bool // "example.com" for the entry "*.example.com"
	prefixes  []netip.Prefix  // IP and CIDR entries
	loopback  []netip.Prefix  // the prefixes inside 127.0.0.0/8 or ::1
}

// Verdict is Decide's answer for one destination.
type Verdict struct {
	// Allow is whether the box may connect.
	Allow bool
	// ByName is the name rule ("api.example.com", "*.example.com") that
	// allowed the destination when only a name allowed it. The caller
	// then checks the name the client speaks (TLS SNI, HTTP Host) with
	// AllowName.
	ByName string
	// Reason says why, for the audit log: "metadata", "loopback",
	// "internal", "not listed", "open", "rule 10.0.0.0/8", ...
	Reason string
}

// ParsePolicy parses an egress allow-list (see Policy for the forms of an
// entry). An empty or nil list allows any destination, like "*". Repeated
// entries count once. A malformed entry fails with an error wrapping
// errdefs.ErrInvalidArgument that names it.
func ParsePolicy(entries []string) (*Policy, error) {
	p := &Policy{names: map[string]bool{}, wildcards: map[string]bool{}}
	if len(entries) == 0 {
		entries = []string{openEntry}
	}
	seen := map[string]bool{}
	for _, entry := range entries {
		r, err := parseRule(entry)
		if err != nil {
			return nil, err
		}
		if seen[r.canonical] {
			continue
		}
		seen[r.canonical] = true
		p.entries = append(p.entries, r.canonical)
		switch {
		case r.canonical == openEntry:
			p.open = true
		case r.wildcard:
			p.wildcards[r.name] = true
		case r.name != "":
			p.names[r.name] = true
			p.hostAlias = p.hostAlias || r.name == hostAliasName
		default:
			p.prefixes = append(p.prefixes, r.prefix)
			if isLoopbackPrefix(r.prefix) {
				p.loopback = append(p.loopback, r.prefix)
			}
		}
	}
	return p, nil
}

// Entries returns the policy's entries in canonical form (lower case, no
// trailing dot, masked prefixes), without repeats, for display. An open
// policy parsed from an empty list returns ["*"]. ParsePolicy of the
// result gives an equal policy.
func (p *Policy) Entries() []string {
	if p == nil {
		return []string{openEntry}
	}
	return append([]string(nil), p.entries...)
}

// Open reports whether the policy allows any destination ("*" or an empty
// list). Even an open policy denies what Decide always denies.
func (p *Policy) Open() bool { return p == nil || p.open }

// AllowName reports whether the box may resolve name: always under an
// open policy, else when an exact or wildcard entry matches it.
// host.boxlite.internal counts as an exact name.
func (p *Policy) AllowName(name string) bool {
	return p.Open() || p.nameRule(name) != ""
}

// nameRule returns the entry that matches name ("api.example.com",
// "*.example.com"), or "" for none; "*" is no name rule.
func (p *Policy) nameRule(name string) string {
	if p == nil {
		return ""
	}
	name, ok := canonicalName(name)
	if !ok {
		return ""
	}
	if p.names[name] {
		return name
	}
	for parent := name; ; {
		i := strings.IndexByte(parent, '.')
		if i < 0 {
			return ""
		}
		parent = parent[i+1:]
		if p.wildcards[parent] {
			return "*." + parent
		}
	}
}

// Decide says whether the box may connect to dst, the address the host
// would dial, which the box learned from DNS answers for names (nil when
// it was not given any). In order:
//
//  1. Denied whatever the list says: link-local addresses, cloud
//     metadata among them (169.254.0.0/16, fe80::/10, fd00:ec2::254:
//     "metadata"), unspecified addresses (0.0.0.0/8, ::), multicast,
//     255.255.255.255, and Internal ("internal").
//  2. The host's loopback (127.0.0.0/8, ::1) only when an entry names
//     it: an address or prefix inside 127.0.0.0/8 (not 0.0.0.0/0, not
//     "*"), ::1, host.boxlite.internal for 127.0.0.1, or an exact name
//     rule matching one of names (not a wildcard: whoever runs DNS for a
//     domain could point its names at the host). Else denied: "loopback".
//  3. An open policy allows the rest.
//  4. An address or prefix entry containing dst allows it.
//  5. A name rule matching one of names allows it, with ByName set.
//  6. Anything else is denied: "not listed".
//
// IPv4-mapped IPv6 addresses are decided as the IPv4 address they map.
func (p *Policy) Decide(dst netip.Addr, names []string) Verdict {
	dst = dst.Unmap().WithZone("")
	var internal netip.Prefix
	if p != nil {
		internal = p.Internal
	}
	if reason := alwaysDenied(dst, internal); reason != "" {
		return Verdict{Reason: reason}
	}
	if dst.IsLoopback() {
		if p == nil {
			return Verdict{Reason: "loopback"}
		}
		for _, pfx := range p.loopback {
			if pfx.Contains(dst) {
				return Verdict{Allow: true, Reason: "rule " + prefixEntry(pfx)}
			}
		}
		if p.hostAlias && dst == hostAddr {
			return Verdict{Allow: true, Reason: "rule " + hostAliasName}
		}
		if rule := p.namesRule(names); rule != "" && !strings.HasPrefix(rule, "*") {
			return Verdict{Allow: true, ByName: rule, Reason: "rule " + rule}
		}
		return Verdict{Reason: "loopback"}
	}
	if p.Open() {
		return Verdict{Allow: true, Reason: "open"}
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(dst) {
			return Verdict{Allow: true, Reason: "rule " + prefixEntry(pfx)}
		}
	}
	if rule := p.namesRule(names); rule != "" {
		return Verdict{Allow: true, ByName: rule, Reason: "rule " + rule}
	}
	return Verdict{Reason: "not listed"}
}

// namesRule returns the entry matching the first name it matches.
func (p *Policy) namesRule(names []string) string {
	for _, n := range names {
		if rule := p.nameRule(n); rule != "" {
			return rule
		}
	}
	return ""
}

// alwaysDenied returns why dst is out of any policy's reach, or "".
func alwaysDenied(dst netip.Addr, internal netip.Prefix) string {
	switch {
	case !dst.IsValid():
		return "invalid"
	case metadata4.Contains(dst), metadata6.Contains(dst), dst == ec2Metadata:
		return "metadata"
	case dst.IsUnspecified(), thisNetwork.Contains(dst):
		return "unspecified"
	case dst.IsMulticast():
		return "multicast"
	case dst == broadcast4:
		return "broadcast"
	case internal.IsValid() && internal.Contains(dst):
		return "internal"
	}
	return ""
}

// isLoopbackPrefix reports whether pfx lies inside 127.0.0.0/8 or is ::1:
// only such an entry opens the host's loopback.
func isLoopbackPrefix(pfx netip.Prefix) bool {
	if pfx.Addr().Is4() {
		return pfx.Bits() >= loopback4.Bits() && loopback4.Contains(pfx.Addr())
	}
	return pfx.IsSingleIP() && pfx.Addr() == netip.IPv6Loopback()
}

// rule is one parsed entry.
type rule struct {
	canonical string
	name      string // exact name, or the parent of a wildcard
	wildcard  bool
	prefix    netip.Prefix
}

func parseRule(entry string) (rule, error) {
	bad := func(why string) (rule, error) {
		return rule{}, fmt.Errorf("egress entry %q: %s: %w", entry, why, errdefs.ErrInvalidArgument)
	}
	switch {
	case entry == "":
		return bad("empty")
	case entry == openEntry:
		return rule{canonical: openEntry}, nil
	case strings.HasPrefix(entry, "*."):
		name, ok := canonicalName(entry[2:])
		if !ok {
			return bad("not a wildcard of a DNS name")
		}
		return rule{canonical: "*." + name, name: name, wildcard: true}, nil
	case strings.Contains(entry, "/"):
		pfx, err := netip.ParsePrefix(entry)
		if err != nil {
			return bad("not a CIDR prefix")
		}
		pfx = unmapPrefix(pfx.Masked())
		return rule{canonical: prefixEntry(pfx), prefix: pfx}, nil
	}
	if addr, err := netip.ParseAddr(entry); err == nil {
		if addr.Zone() != "" {
			return bad("an address with a zone")
		}
		addr = addr.Unmap()
		pfx := netip.PrefixFrom(addr, addr.BitLen())
		return rule{canonical: prefixEntry(pfx), prefix: pfx}, nil
	}
	name, ok := canonicalName(entry)
	if !ok {
		return bad("not a DNS name, address or CIDR prefix")
	}
	return rule{canonical: name, name: name}, nil
}

// unmapPrefix turns a prefix of IPv4-mapped IPv6 addresses into the IPv4
// prefix, since Decide sees mapped addresses unmapped.
func unmapPrefix(pfx netip.Prefix) netip.Prefix {
	if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
		return netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
	}
	return pfx
}

// prefixEntry is the canonical entry of a prefix: a single address
// without its length.
func prefixEntry(pfx netip.Prefix) string {
	if pfx.IsSingleIP() {
		return pfx.Addr().String()
	}
	return pfx.String()
}

// canonicalName lower-cases a DNS host name and drops one trailing dot.
// It reports false unless the result is a valid name: at most 253 bytes,
// labels of 1 to 63 ASCII letters, digits, '-' or '_' that neither start
// nor end with '-', and a last label that is not all digits (so that no
// address, complete or not, passes for a name).
func canonicalName(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(s))
	label, digits := 0, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 || s[i-1] == '-' {
				return "", false
			}
			label, digits = 0, true
			b.WriteByte(c)
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
			digits = false
		case 'a' <= c && c <= 'z', c == '_':
			digits = false
		case '0' <= c && c <= '9':
		case c == '-':
			if label == 0 {
				return "", false
			}
			digits = false
		default:
			return "", false
		}
		label++
		if label > 63 {
			return "", false
		}
		b.WriteByte(c)
	}
	if label == 0 || s[len(s)-1] == '-' || digits {
		return "", false
	}
	return b.String(), true
}
