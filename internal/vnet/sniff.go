package vnet

import (
	"bytes"
	"net/netip"
	"strings"
)

// sniffLimit is how many bytes SniffHost waits for at most.
const sniffLimit = 16 << 10

// SniffHost reads the host name a client names in the first bytes b it
// sent on a TCP connection: the server name (SNI) of a TLS ClientHello,
// proto "tls", or the Host of an HTTP/1.x request head, proto "http"
// (lower case, port stripped; an IP literal is returned as such). The
// bytes are untrusted and checked strictly.
//
// more reports that b is the beginning of something that could still
// become a complete ClientHello or request head, so the caller should
// read more and call again; SniffHost gives up (more false) once the
// first 16 KiB hold neither. A complete ClientHello without a server
// name, or request head without a host, returns "" with its proto. For
// anything else, SniffHost returns "", "", false.
//
// With Encrypted Client Hello the server name is the outer, public one.
func SniffHost(b []byte) (host, proto string, more bool) {
	if len(b) == 0 {
		return "", "", true
	}
	if len(b) > sniffLimit {
		b = b[:sniffLimit]
	}
	switch c := b[0]; {
	case c == tlsRecordHandshake:
		return sniffTLS(b)
	case 'A' <= c && c <= 'Z':
		return sniffHTTP(b)
	}
	return "", "", false
}

// TLS constants (RFC 8446, RFC 6066).
const (
	tlsRecordHandshake   = 22
	tlsClientHello       = 1
	tlsExtServerName     = 0
	tlsServerNameHost    = 0
	tlsRecordHeaderLen   = 5
	tlsMaxRecordLen      = 1 << 14
	tlsHandshakeHeadLen  = 4
	tlsMaxSessionIDLen   = 32
	tlsClientRandomBytes = 32
)

// sniffTLS gathers the handshake message from consecutive handshake
// records (a ClientHello may span several) and parses it.
func sniffTLS(b []byte) (string, string, bool) {
	var msg []byte
	rest := b
	for {
		if len(rest) < tlsRecordHeaderLen {
			// The header so far must be a handshake record of TLS 1.x.
			if (len(rest) >= 1 && rest[0] != tlsRecordHandshake) || (len(rest) >= 2 && rest[1] != 3) {
				return "", "", false
			}
			return "", "", len(b) < sniffLimit
		}
		n := int(rest[3])<<8 | int(rest[4])
		if rest[0] != tlsRecordHandshake || rest[1] != 3 || n == 0 || n > tlsMaxRecordLen {
			return "", "", false
		}
		rest = rest[tlsRecordHeaderLen:]
		complete := len(rest) >= n
		if complete {
			msg = append(msg, rest[:n]...)
			rest = rest[n:]
		} else {
			msg = append(msg, rest...)
		}
		if len(msg) > 0 && msg[0] != tlsClientHello {
			return "", "", false
		}
		if len(msg) >= tlsHandshakeHeadLen {
			bodyLen := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if tlsHandshakeHeadLen+bodyLen > sniffLimit {
				return "", "", false
			}
			if len(msg) >= tlsHandshakeHeadLen+bodyLen {
				return parseClientHello(msg[tlsHandshakeHeadLen : tlsHandshakeHeadLen+bodyLen])
			}
		}
		if !complete {
			return "", "", len(b) < sniffLimit
		}
	}
}

// parseClientHello returns the host name of a ClientHello body.
func parseClientHello(body []byte) (string, string, bool) {
	r := byteReader{b: body}
	r.skip(2) // legacy_version
	r.skip(tlsClientRandomBytes)
	if sid := r.vec8(); len(sid) > tlsMaxSessionIDLen {
		return "", "", false
	}
	if suites := r.vec16(); len(suites) == 0 || len(suites)%2 != 0 {
		return "", "", false
	}
	if methods := r.vec8(); len(methods) == 0 {
		return "", "", false
	}
	if r.bad {
		return "", "", false
	}
	if len(r.b) == 0 { // no extensions
		return "", "tls", false
	}
	exts := byteReader{b: r.vec16()}
	if r.bad || len(r.b) != 0 {
		return "", "", false
	}
	var name []byte
	seen := false
	for len(exts.b) > 0 && !exts.bad {
		typ, data := exts.u16(), exts.vec16()
		if exts.bad || typ != tlsExtServerName {
			continue
		}
		if seen {
			return "", "", false
		}
		seen = true
		sn := byteReader{b: data}
		list := byteReader{b: sn.vec16()}
		if sn.bad || len(sn.b) != 0 || len(list.b) == 0 {
			return "", "", false
		}
		for len(list.b) > 0 {
			nameType, n := list.u8(), list.vec16()
			if list.bad {
				return "", "", false
			}
			if nameType == tlsServerNameHost {
				if name != nil {
					return "", "", false
				}
				name = n
			}
		}
	}
	if exts.bad {
		return "", "", false
	}
	host, ok := canonicalName(string(name))
	if !ok {
		return "", "tls", false
	}
	return host, "tls", false
}

// byteReader reads TLS wire fields; a read past the end sets bad and
// returns zeros from then on.
type byteReader struct {
	b   []byte
	bad bool
}

func (r *byteReader) take(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *byteReader) skip(n int) { r.take(n) }

func (r *byteReader) u8() int {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *byteReader) u16() int {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int(v[0])<<8 | int(v[1])
}

func (r *byteReader) vec8() []byte  { return r.take(r.u8()) }
func (r *byteReader) vec16() []byte { return r.take(r.u16()) }

// httpMaxMethod bounds the method of a request line.
const httpMaxMethod = 20

// sniffHTTP reads the request head line by line. A request for another
// host than its Host header names (absolute-form target, CONNECT) has no
// trustworthy host and is refused.
func sniffHTTP(b []byte) (string, string, bool) {
	rest := b
	first := true
	var target, hostHeader string
	haveHost := false
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			if len(b) >= sniffLimit || !partialLineOK(rest, first) {
				return "", "", false
			}
			return "", "", true
		}
		line := rest[:i]
		rest = rest[i+1:]
		line = bytes.TrimSuffix(line, []byte("\r"))
		if first {
			t, ok := parseRequestLine(string(line))
			if !ok {
				return "", "", false
			}
			target, first = t, false
			continue
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := parseHeaderLine(line)
		if !ok {
			return "", "", false
		}
		if strings.EqualFold(name, "host") {
			if haveHost {
				return "", "", false
			}
			hostHeader, haveHost = value, true
		}
	}

	host := ""
	if haveHost && hostHeader != "" {
		h, ok := splitHostPort(hostHeader)
		if !ok {
			return "", "", false
		}
		host = h
	}
	if target != "" { // the request names its host in its target
		h, ok := splitHostPort(target)
		if !ok || (haveHost && h != host) {
			return "", "", false
		}
		host = h
	}
	return host, "http", false
}

// parseRequestLine checks "METHOD target HTTP/1.x" and returns the host
// part of an absolute-form or authority-form target, else "".
func parseRequestLine(line string) (string, bool) {
	method, rest, ok := strings.Cut(line, " ")
	if !ok || !isMethod(method) {
		return "", false
	}
	target, version, ok := strings.Cut(rest, " ")
	if !ok || target == "" || (version != "HTTP/1.1" && version != "HTTP/1.0") {
		return "", false
	}
	for i := 0; i < len(target); i++ {
		if target[i] <= ' ' || target[i] >= 0x7f {
			return "", false
		}
	}
	switch {
	case method == "CONNECT":
		return target, true
	case hasPrefixFold(target, "http://"), hasPrefixFold(target, "https://"):
		_, authority, _ := strings.Cut(target, "://")
		if i := strings.IndexAny(authority, "/?#"); i >= 0 {
			authority = authority[:i]
		}
		if authority == "" {
			return "", false
		}
		return authority, true
	case target[0] == '/' || target == "*":
		return "", true
	}
	return "", false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isMethod(s string) bool {
	if s == "" || len(s) > httpMaxMethod {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// parseHeaderLine splits "Name: value", trimming the value's blanks. A
// continuation line (obsolete folding) or a space before the colon is
// malformed.
func parseHeaderLine(line []byte) (string, string, bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return "", "", false
	}
	for _, c := range line[:colon] {
		if !isTokenChar(c) {
			return "", "", false
		}
	}
	for _, c := range line[colon+1:] {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return "", "", false
		}
	}
	value := strings.Trim(string(line[colon+1:]), " \t")
	return string(line[:colon]), value, true
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// partialLineOK reports whether an unfinished line could still become a
// valid request line (first) or header line.
func partialLineOK(line []byte, first bool) bool {
	if !first {
		for i, c := range line {
			if c == '\r' && i == len(line)-1 {
				continue
			}
			if (c < ' ' && c != '\t') || c == 0x7f {
				return false
			}
		}
		return true
	}
	method, rest, cut := bytes.Cut(line, []byte(" "))
	if len(method) > httpMaxMethod || (cut && len(method) == 0) {
		return false
	}
	for _, c := range method {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	target, version, cut := bytes.Cut(rest, []byte(" "))
	for _, c := range target {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	if !cut {
		return true
	}
	if len(target) == 0 {
		return false
	}
	version = bytes.TrimSuffix(version, []byte("\r"))
	for _, v := range []string{"HTTP/1.1", "HTTP/1.0"} {
		if strings.HasPrefix(v, string(version)) {
			return true
		}
	}
	return false
}

// splitHostPort returns the lower-case host of "host", "host:port",
// "[v6]" or "[v6]:port", if it is a DNS name or an IP address.
func splitHostPort(s string) (string, bool) {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", false
		}
		host, port = s[1:end], s[end+1:]
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", false
		}
		host = addr.String()
		if port != "" && !strings.HasPrefix(port, ":") {
			return "", false
		}
		port = strings.TrimPrefix(port, ":")
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
		}
		if addr, err := netip.ParseAddr(host); err == nil && addr.Is4() {
			host = addr.String()
		} else if name, ok := canonicalName(host); ok {
			host = name
		} else {
			return "", false
		}
	}
	if len(port) > 5 {
		return "", false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return "", false
		}
	}
	return host, true
}
