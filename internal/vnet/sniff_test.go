package vnet

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// clientHello returns the first bytes a crypto/tls client sends: a
// ClientHello record for serverName.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := tls.Client(client, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		c.Handshake() // fails once the server side closes
		c.Close()
	}()
	buf := make([]byte, 64<<10)
	n, err := server.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	<-done
	return buf[:n]
}

// refragment splits the handshake message of a one-record ClientHello into
// records of at most size bytes.
func refragment(t testing.TB, hello []byte, size int) []byte {
	t.Helper()
	if len(hello) < 5 || int(hello[3])<<8|int(hello[4]) != len(hello)-5 {
		t.Fatalf("not a single record: % x", hello[:5])
	}
	var out []byte
	msg := hello[5:]
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

type sniffResult struct {
	host, proto string
	more        bool
}

func sniff(b []byte) sniffResult {
	host, proto, more := SniffHost(b)
	return sniffResult{host, proto, more}
}

func TestSniffTLS(t *testing.T) {
	hello := clientHello(t, "api.example.com")
	if hello[0] != 22 {
		t.Fatalf("crypto/tls sent % x, not a handshake record", hello[:5])
	}
	corrupt := func(i int, v byte) []byte {
		b := bytes.Clone(hello)
		b[i] = v
		return b
	}
	fragments := refragment(t, hello, 100)
	tinyFragments := refragment(t, hello, 1)
	tests := []struct {
		name string
		b    []byte
		want sniffResult
	}{
		{"hello", hello, sniffResult{"api.example.com", "tls", false}},
		{"hello upper case", clientHello(t, "API.Example.COM"), sniffResult{"api.example.com", "tls", false}},
		{"hello and more", append(bytes.Clone(hello), 23, 3, 3, 0, 1, 0), sniffResult{"api.example.com", "tls", false}},
		{"hello in records", fragments, sniffResult{"api.example.com", "tls", false}},
		{"hello in 1-byte records", tinyFragments, sniffResult{"api.example.com", "tls", false}},
		{"no server name", clientHello(t, ""), sniffResult{"", "tls", false}},
		{"ip server name", clientHello(t, "203.0.113.7"), sniffResult{"", "tls", false}},
		{"empty", nil, sniffResult{"", "", true}},
		{"one byte", hello[:1], sniffResult{"", "", true}},
		{"not tls 1.x", []byte{22, 2}, sniffResult{"", "", false}},
		{"alert record", corrupt(0, 21), sniffResult{"", "", false}},
		{"record too long", corrupt(3, 0x41), sniffResult{"", "", false}},
		{"server hello", corrupt(5, 2), sniffResult{"", "", false}},
		{"message too long", corrupt(6, 1), sniffResult{"", "", false}},
		{"empty record", []byte{22, 3, 1, 0, 0}, sniffResult{"", "", false}},
		{"second record not handshake", append(bytes.Clone(fragments[:105]), 23), sniffResult{"", "", false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sniff(tt.b); got != tt.want {
				t.Errorf("SniffHost = %+v, want %+v", got, tt.want)
			}
		})
	}

	for name, b := range map[string][]byte{"one record": hello, "records": fragments} {
		for i := range len(b) {
			if got := sniff(b[:i]); got != (sniffResult{more: true}) {
				t.Fatalf("%s: SniffHost of the first %d of %d bytes = %+v, want more", name, i, len(b), got)
			}
		}
	}
}

// sniExt is a server_name extension naming name.
func sniExt(name string) []byte {
	entry := append([]byte{0, byte(len(name) >> 8), byte(len(name))}, name...)
	list := append([]byte{byte(len(entry) >> 8), byte(len(entry))}, entry...)
	return append([]byte{0, 0, byte(len(list) >> 8), byte(len(list))}, list...)
}

// buildHello builds a ClientHello record field by field.
func buildHello(sessionID, suites, methods, exts []byte, withExts bool) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, byte(len(sessionID)))
	body = append(body, sessionID...)
	body = append(body, byte(len(suites)>>8), byte(len(suites)))
	body = append(body, suites...)
	body = append(body, byte(len(methods)))
	body = append(body, methods...)
	if withExts {
		body = append(body, byte(len(exts)>>8), byte(len(exts)))
		body = append(body, exts...)
	}
	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// TestSniffTLSMalformed damages the fields of a ClientHello one by one.
func TestSniffTLSMalformed(t *testing.T) {
	suites, methods := []byte{0x13, 0x01}, []byte{0}
	other := []byte{0x00, 0x0a, 0, 2, 0, 0x1d} // supported_groups
	tests := []struct {
		name string
		b    []byte
		want sniffResult
	}{
		{"minimal", buildHello(nil, suites, methods, sniExt("a.example"), true), sniffResult{"a.example", "tls", false}},
		{"among others", buildHello(nil, suites, methods, append(append(bytes.Clone(other), sniExt("a.example")...), other...), true), sniffResult{"a.example", "tls", false}},
		{"trailing dot", buildHello(nil, suites, methods, sniExt("a.example."), true), sniffResult{"a.example", "tls", false}},
		{"no extensions", buildHello(nil, suites, methods, nil, false), sniffResult{"", "tls", false}},
		{"empty extensions", buildHello(nil, suites, methods, nil, true), sniffResult{"", "tls", false}},
		{"long session id", buildHello(make([]byte, 33), suites, methods, sniExt("a.example"), true), sniffResult{"", "", false}},
		{"odd suites", buildHello(nil, []byte{1, 2, 3}, methods, sniExt("a.example"), true), sniffResult{"", "", false}},
		{"no suites", buildHello(nil, nil, methods, sniExt("a.example"), true), sniffResult{"", "", false}},
		{"no compression", buildHello(nil, suites, nil, sniExt("a.example"), true), sniffResult{"", "", false}},
		{"two sni", buildHello(nil, suites, methods, append(sniExt("a.example"), sniExt("b.example")...), true), sniffResult{"", "", false}},
		{"bad name", buildHello(nil, suites, methods, sniExt("a b.example"), true), sniffResult{"", "tls", false}},
		{"nul in name", buildHello(nil, suites, methods, sniExt("a.example\x00.evil"), true), sniffResult{"", "tls", false}},
		{"extension overruns", buildHello(nil, suites, methods, []byte{0, 0, 0, 9, 0}, true), sniffResult{"", "", false}},
		{"sni list overruns", buildHello(nil, suites, methods, []byte{0, 0, 0, 3, 0, 9, 0}, true), sniffResult{"", "", false}},
		{"sni name overruns", buildHello(nil, suites, methods, []byte{0, 0, 0, 5, 0, 3, 0, 0, 9}, true), sniffResult{"", "", false}},
		{"sni trailing byte", buildHello(nil, suites, methods, []byte{0, 0, 0, 4, 0, 0, 0, 0}, true), sniffResult{"", "", false}},
		{"empty sni list", buildHello(nil, suites, methods, []byte{0, 0, 0, 2, 0, 0}, true), sniffResult{"", "", false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sniff(tt.b); got != tt.want {
				t.Errorf("SniffHost = %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("trailing bytes in body", func(t *testing.T) {
		b := buildHello(nil, suites, methods, sniExt("a.example"), true)
		b = append(b, 0)
		b[4]++ // record length
		b[8]++ // message length
		if got := sniff(b); got != (sniffResult{}) {
			t.Errorf("SniffHost = %+v, want nothing", got)
		}
	})
}

func TestSniffHTTP(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want sniffResult
	}{
		{"get", "GET / HTTP/1.1\r\nHost: Example.COM\r\nAccept: */*\r\n\r\n", sniffResult{"example.com", "http", false}},
		{"port stripped", "GET /x?y HTTP/1.1\r\nUser-Agent: t\r\nhost:  api.example.com:8080 \r\n\r\n", sniffResult{"api.example.com", "http", false}},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: example.com.\r\n\r\n", sniffResult{"example.com", "http", false}},
		{"bare newlines", "POST /p HTTP/1.0\nHost: example.com\n\nbody", sniffResult{"example.com", "http", false}},
		{"body follows", "PUT / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc", sniffResult{"a.example", "http", false}},
		{"ipv4 host", "GET / HTTP/1.1\r\nHost: 203.0.113.7:80\r\n\r\n", sniffResult{"203.0.113.7", "http", false}},
		{"ipv6 host", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n", sniffResult{"2001:db8::1", "http", false}},
		{"no host", "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", sniffResult{"", "http", false}},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", sniffResult{"", "http", false}},
		{"absolute form", "GET http://Example.com:80/x HTTP/1.1\r\nHost: example.com\r\n\r\n", sniffResult{"example.com", "http", false}},
		{"absolute form alone", "GET http://example.com/x HTTP/1.0\r\n\r\n", sniffResult{"example.com", "http", false}},
		{"absolute form elsewhere", "GET http://evil.example/x HTTP/1.1\r\nHost: good.example\r\n\r\n", sniffResult{"", "", false}},
		{"connect", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", sniffResult{"evil.example", "http", false}},
		{"connect elsewhere", "CONNECT evil.example:443 HTTP/1.1\r\nHost: good.example\r\n\r\n", sniffResult{"", "", false}},
		{"options star", "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n", sniffResult{"a.example", "http", false}},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", sniffResult{"", "", false}},
		{"folded header", "GET / HTTP/1.1\r\nHost: a.example\r\n x\r\n\r\n", sniffResult{"", "", false}},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", sniffResult{"", "", false}},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b.example\r\n\r\n", sniffResult{"", "", false}},
		{"userinfo", "GET / HTTP/1.1\r\nHost: u@a.example\r\n\r\n", sniffResult{"", "", false}},
		{"bad port", "GET / HTTP/1.1\r\nHost: a.example:http\r\n\r\n", sniffResult{"", "", false}},
		{"control in header", "GET / HTTP/1.1\r\nHost: a.example\r\nX: \x01\r\n\r\n", sniffResult{"", "", false}},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", sniffResult{"", "", false}},
		{"lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", sniffResult{"", "", false}},
		{"relative target", "GET x HTTP/1.1\r\nHost: a.example\r\n\r\n", sniffResult{"", "", false}},
		{"no version", "GET /\r\nHost: a.example\r\n\r\n", sniffResult{"", "", false}},
		{"text", "Hello world\r\n\r\n", sniffResult{"", "", false}},
		{"ssh", "SSH-2.0-OpenSSH_9.6\r\n", sniffResult{"", "", false}},
		{"binary", "\x00\x01\x02", sniffResult{"", "", false}},
		{"partial method", "GE", sniffResult{"", "", true}},
		{"partial version", "GET / HTTP/1.", sniffResult{"", "", true}},
		{"partial header", "GET / HTTP/1.1\r\nHost: a.exa", sniffResult{"", "", true}},
		{"bad partial version", "GET / HTTP/2", sniffResult{"", "", false}},
		{"long method", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", sniffResult{"", "", false}},
		{"partial control", "GET / HTTP/1.1\r\nX: \x01", sniffResult{"", "", false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sniff([]byte(tt.in)); got != tt.want {
				t.Errorf("SniffHost(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}

	head := "GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"
	for i := range len(head) {
		if got := sniff([]byte(head[:i])); got != (sniffResult{more: true}) {
			t.Fatalf("SniffHost(%q) = %+v, want more", head[:i], got)
		}
	}
}

func TestSniffLimit(t *testing.T) {
	// A ClientHello in 1-byte records that takes more than the limit.
	padding := append([]byte{0, 21, 0x0c, 0x00}, make([]byte, 0xc00)...)
	hello := buildHello(nil, []byte{0x13, 0x01}, []byte{0}, append(sniExt("a.example"), padding...), true)
	tiny := refragment(t, hello, 1)
	if len(tiny) <= sniffLimit {
		t.Fatalf("%d bytes are within the limit", len(tiny))
	}
	if got := sniff(hello); got != (sniffResult{"a.example", "tls", false}) {
		t.Fatalf("SniffHost of the padded hello = %+v", got)
	}
	for _, n := range []int{sniffLimit - 1, sniffLimit, len(tiny)} {
		want := sniffResult{more: n < sniffLimit}
		if got := sniff(tiny[:n]); got != want {
			t.Errorf("SniffHost of %d bytes of a fragmented hello = %+v, want %+v", n, got, want)
		}
	}

	long := "GET / HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", sniffLimit) + "\r\nHost: a.example\r\n\r\n"
	for _, n := range []int{sniffLimit - 1, sniffLimit, len(long)} {
		want := sniffResult{more: n < sniffLimit}
		if got := sniff([]byte(long[:n])); got != want {
			t.Errorf("SniffHost of %d bytes of a long head = %+v, want %+v", n, got, want)
		}
	}
	// A head that ends within the limit is read even if more bytes follow.
	fits := "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n" + strings.Repeat("x", 2*sniffLimit)
	if got := sniff([]byte(fits)); got != (sniffResult{"a.example", "http", false}) {
		t.Errorf("SniffHost of a head and a long body = %+v", got)
	}
}

func FuzzSniffHost(f *testing.F) {
	hello := clientHello(f, "api.example.com")
	f.Add(hello)
	f.Add(refragment(f, hello, 200))
	f.Add(hello[:40])
	f.Add([]byte("GET / HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n"))
	f.Add([]byte("GET http://a.example/ HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"))
	f.Add([]byte("CONNECT a.example:443 HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\n\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		host, proto, more := SniffHost(b)
		switch {
		case more && (host != "" || proto != ""):
			t.Fatalf("more with a result: %q %q", host, proto)
		case more && len(b) >= sniffLimit:
			t.Fatalf("more after %d bytes", len(b))
		case host != "" && proto != "tls" && proto != "http":
			t.Fatalf("host %q with proto %q", host, proto)
		}
		if host == "" {
			return
		}
		if name, ok := canonicalName(host); ok && name == host {
			return
		}
		if addr, err := netip.ParseAddr(host); err == nil && proto == "http" && addr.String() == host {
			return
		}
		t.Fatalf("host %q (%s) is not a canonical name or address", host, proto)
	})
}
