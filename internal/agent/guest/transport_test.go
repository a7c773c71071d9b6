//go:build linux

package guest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

// fakePort behaves like a virtio-serial port seen from the guest: reads
// return EOF while the host is not connected (once queued data is drained),
// and writes made while it is not connected are lost.
type fakePort struct {
	mu        sync.Mutex
	cond      *sync.Cond
	connected bool
	in        []byte       // host → guest, not yet read
	out       bytes.Buffer // guest → host, while connected
	lost      int          // bytes written while disconnected
	session   int          // counts connects, so a host conn only reads its own session
}

func newFakePort() *fakePort {
	p := &fakePort{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.in) == 0 {
		if !p.connected {
			return 0, io.EOF
		}
		p.cond.Wait()
	}
	n := copy(b, p.in)
	p.in = p.in[n:]
	return n, nil
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.connected {
		p.lost += len(b)
		return len(b), nil
	}
	p.out.Write(b)
	p.cond.Broadcast()
	return len(b), nil
}

func (p *fakePort) connect() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connected = true
	p.session++
	p.out.Reset()
	p.cond.Broadcast()
	return p.session
}

func (p *fakePort) disconnect() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connected = false
	p.cond.Broadcast()
}

func (p *fakePort) hostSend(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.in = append(p.in, b...)
	p.cond.Broadcast()
}

// hostRead waits for n bytes from the guest.
func (p *fakePort) hostRead(t *testing.T, n int) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.out.Len() < n {
		if time.Now().After(deadline) {
			t.Fatalf("host got %q, waiting for %d bytes", p.out.Bytes(), n)
		}
		p.mu.Unlock()
		time.Sleep(time.Millisecond)
		p.mu.Lock()
	}
	return p.out.Next(n)
}

// hostConn is the host's end of one connection over a fakePort.
type hostConn struct {
	p       *fakePort
	session int
	once    sync.Once
}

func (c *hostConn) Read(b []byte) (int, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	for c.p.out.Len() == 0 {
		if c.p.session != c.session || !c.p.connected {
			return 0, io.EOF
		}
		c.p.cond.Wait()
	}
	return c.p.out.Read(b)
}

func (c *hostConn) Write(b []byte) (int, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	if c.p.session != c.session || !c.p.connected {
		return 0, net.ErrClosed
	}
	c.p.in = append(c.p.in, b...)
	c.p.cond.Broadcast()
	return len(b), nil
}

func (c *hostConn) Close() error {
	c.once.Do(c.p.disconnect)
	return nil
}

func (c *hostConn) LocalAddr() net.Addr                { return portAddr("host") }
func (c *hostConn) RemoteAddr() net.Addr               { return portAddr("guest") }
func (c *hostConn) SetDeadline(t time.Time) error      { return nil }
func (c *hostConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *hostConn) SetWriteDeadline(t time.Time) error { return nil }

func acceptWithin(t *testing.T, l net.Listener, d time.Duration) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.c
	case <-time.After(d):
		t.Fatal("Accept did not return")
		return nil
	}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func TestPortListenerConnections(t *testing.T) {
	port := newFakePort()
	l := newPortListener(port, "fake", nil)
	t.Cleanup(func() { l.Close() })

	// Nothing connected: Accept waits; EOFs are retried, not fatal.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	select {
	case <-accepted:
		t.Fatal("Accept returned before the host sent anything")
	case <-time.After(50 * time.Millisecond):
	}

	// Guest writes before the host speaks are lost; the connection starts
	// at the first byte received.
	port.connect()
	port.hostSend([]byte("hello "))
	port.hostSend([]byte("guest"))
	var c1 net.Conn
	select {
	case c1 = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after data")
	}
	if got := readN(t, c1, len("hello guest")); got != "hello guest" {
		t.Fatalf("read %q", got)
	}
	if _, err := c1.Write([]byte("hi host")); err != nil {
		t.Fatal(err)
	}
	if got := string(port.hostRead(t, 7)); got != "hi host" {
		t.Fatalf("host read %q", got)
	}

	// Data queued before the disconnect still reaches the connection; then EOF.
	port.hostSend([]byte("bye"))
	port.disconnect()
	if got := readN(t, c1, 3); got != "bye" {
		t.Fatalf("read %q", got)
	}
	if n, err := c1.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after disconnect = %d, %v; want EOF", n, err)
	}
	// Writes of the dead connection never reach the next one.
	if _, err := c1.Write([]byte("stale")); err == nil {
		t.Fatal("write on a disconnected connection succeeded")
	}

	// Next connection.
	port.connect()
	port.hostSend([]byte("again"))
	c2 := acceptWithin(t, l, 5*time.Second)
	if got := readN(t, c2, 5); got != "again" {
		t.Fatalf("read %q", got)
	}
	c2.Write([]byte("ok"))
	if got := string(port.hostRead(t, 2)); got != "ok" {
		t.Fatalf("host read %q", got)
	}
}

func TestPortListenerLocalClose(t *testing.T) {
	port := newFakePort()
	l := newPortListener(port, "fake", nil)
	t.Cleanup(func() { l.Close() })

	port.connect()
	port.hostSend([]byte("first"))
	c1 := acceptWithin(t, l, 5*time.Second)
	readN(t, c1, 5)
	c1.Close()
	if _, err := c1.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	// The rest of this host session is dropped, not turned into a new
	// connection...
	port.hostSend([]byte("rest of session"))
	time.Sleep(50 * time.Millisecond)
	port.disconnect()
	// ...and the next session is a clean connection. (A host must not
	// reconnect before the guest has read the EOF of its last session, or
	// the two sessions merge into one byte stream.)
	time.Sleep(50 * time.Millisecond)
	port.connect()
	port.hostSend([]byte("next"))
	c2 := acceptWithin(t, l, 5*time.Second)
	if got := readN(t, c2, 4); got != "next" {
		t.Fatalf("read %q", got)
	}
}

func TestPortConnDeadline(t *testing.T) {
	port := newFakePort()
	l := newPortListener(port, "fake", nil)
	t.Cleanup(func() { l.Close() })
	port.connect()
	port.hostSend([]byte("x"))
	c := acceptWithin(t, l, 5*time.Second)
	readN(t, c, 1)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("deadline fired after %v", d)
	}
	c.SetReadDeadline(time.Time{})
	port.hostSend([]byte("y"))
	if got := readN(t, c, 1); got != "y" {
		t.Fatalf("read %q", got)
	}
}

func TestPortListenerClose(t *testing.T) {
	l := newPortListener(newFakePort(), "fake", nil)
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

// TestGRPCOverPort runs two successive gRPC sessions over one fake port, as
// a host that reconnects would.
func TestGRPCOverPort(t *testing.T) {
	port := newFakePort()
	l := newPortListener(port, "fake", nil)
	srv := NewServer(Config{})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	for i := range 2 {
		cc, err := grpc.NewClient("passthrough:///agent",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return &hostConn{p: port, session: port.connect()}, nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		client := pb.NewAgentClient(cc)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		resp, err := client.Hello(ctx, &pb.HelloRequest{ProtocolVersion: pb.ProtocolVersion})
		if err != nil {
			t.Fatalf("session %d: Hello: %v", i, err)
		}
		if resp.GetAgentVersion() == "" {
			t.Errorf("session %d: empty agent version", i)
		}
		r := runExec(ctx, t, client, &pb.ExecStart{Name: "echo", Args: []string{"session"}})
		if r.stdout != "session\n" || r.exit.GetExitCode() != 0 {
			t.Fatalf("session %d: exec = %+v", i, r)
		}
		cancel()
		cc.Close()
		// Let the guest see the disconnect before the next session.
		time.Sleep(50 * time.Millisecond)
	}
}
