package guest

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// portRetry is how long the port reader waits before reading again after
// EOF, which a virtio-serial port returns while the host side is closed.
const portRetry = 5 * time.Millisecond

// portAddr is the address of a port listener and its connections.
type portAddr string

func (a portAddr) Network() string { return "virtio-serial" }
func (a portAddr) String() string  { return string(a) }

// portListener turns a virtio-serial port into a net.Listener.
//
// A port is one byte stream shared by successive host connections, and it
// reads EOF while no host is connected. The host always speaks first, so a
// connection begins with the first byte read and ends with the next EOF;
// Accept then waits for the next one. A single goroutine reads the port and
// feeds the current connection, so no byte is lost or handed to a dead
// connection; bytes that arrive for a connection the server has already
// closed are dropped until the host disconnects. Writes go straight to the
// port, but only while their connection is the current one.
type portListener struct {
	port io.ReadWriter
	log  *slog.Logger
	addr portAddr

	accept    chan *portConn
	closed    chan struct{}
	closeOnce sync.Once

	writeMu sync.Mutex // serializes writes, and guards conn.gone against them
}

// newPortListener starts reading port. Close stops the listener; the port
// itself is closed too if it is an io.Closer.
func newPortListener(port io.ReadWriter, name string, log *slog.Logger) *portListener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &portListener{
		port:   port,
		log:    log,
		addr:   portAddr(name),
		accept: make(chan *portConn),
		closed: make(chan struct{}),
	}
	go l.readLoop()
	return l
}

// Accept waits for the host to connect (its first byte).
func (l *portListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops the listener.
func (l *portListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		if c, ok := l.port.(io.Closer); ok {
			c.Close()
		}
	})
	return nil
}

// Addr is the port's name.
func (l *portListener) Addr() net.Addr { return l.addr }

func (l *portListener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

func (l *portListener) readLoop() {
	buf := make([]byte, 64<<10)
	var cur *portConn
	warned := false
	for {
		n, err := l.port.Read(buf)
		if n > 0 {
			if cur == nil {
				cur = newPortConn(l)
				select {
				case l.accept <- cur:
				case <-l.closed:
					return
				}
			}
			cur.deliver(buf[:n]) // blocks until consumed (or conn closed)
		}
		switch {
		case err == nil && n > 0:
			continue
		case err == nil || errors.Is(err, io.EOF):
			// No host (or the host left): end the current connection.
			if cur != nil {
				l.endConn(cur)
				cur = nil
			}
		case l.isClosed():
			if cur != nil {
				l.endConn(cur)
			}
			return
		default:
			if !warned { // once: a broken port would flood the console
				l.log.Warn("agent port read failed", "port", string(l.addr), "err", err)
				warned = true
			}
			time.Sleep(100 * time.Millisecond)
		}
		if l.isClosed() {
			return
		}
		time.Sleep(portRetry)
	}
}

// endConn marks c as disconnected: its reads return EOF once drained, and
// its writes fail, so they cannot leak into the next connection.
func (l *portListener) endConn(c *portConn) {
	l.writeMu.Lock()
	c.gone = true
	l.writeMu.Unlock()
	c.eof()
}

// portConn is one host connection over a port.
type portConn struct {
	l *portListener

	mu       sync.Mutex
	cond     *sync.Cond
	data     []byte // delivered, not yet read
	atEOF    bool   // host disconnected
	closed   bool   // closed locally
	deadline time.Time
	timer    *time.Timer

	gone bool // guarded by l.writeMu
}

func newPortConn(l *portListener) *portConn {
	c := &portConn{l: l}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// deliver hands b to the reader and waits until it has all been read, so
// the port is not read further ahead than the connection consumes.
func (c *portConn) deliver(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return // dropped: the server gave up on this connection
	}
	c.data = b
	c.cond.Broadcast()
	for len(c.data) > 0 && !c.closed {
		c.cond.Wait()
	}
	c.data = nil
}

func (c *portConn) eof() {
	c.mu.Lock()
	c.atEOF = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Read reads data the host sent on this connection.
func (c *portConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, net.ErrClosed
		case len(c.data) > 0:
			n := copy(p, c.data)
			c.data = c.data[n:]
			if len(c.data) == 0 {
				c.cond.Broadcast()
			}
			return n, nil
		case c.atEOF:
			return 0, io.EOF
		case !c.deadline.IsZero() && !time.Now().Before(c.deadline):
			return 0, os.ErrDeadlineExceeded
		}
		c.cond.Wait()
	}
}

// Write writes to the port while this is the current connection.
func (c *portConn) Write(p []byte) (int, error) {
	c.l.writeMu.Lock()
	defer c.l.writeMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if c.gone {
		return 0, io.ErrClosedPipe
	}
	return c.l.port.Write(p)
}

// Close closes the connection locally. The host cannot be told over a
// virtio-serial port; anything it still sends is dropped until it
// disconnects.
func (c *portConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.cond.Broadcast()
	return nil
}

func (c *portConn) LocalAddr() net.Addr  { return c.l.addr }
func (c *portConn) RemoteAddr() net.Addr { return portAddr("host") }

// SetDeadline sets the read deadline. Write deadlines are not supported
// (writes go straight to the shared port); they are accepted and ignored.
func (c *portConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *portConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if !t.IsZero() {
		c.timer = time.AfterFunc(time.Until(t), func() {
			c.mu.Lock()
			c.cond.Broadcast()
			c.mu.Unlock()
		})
	}
	c.cond.Broadcast()
	return nil
}

// SetWriteDeadline is accepted and ignored; see SetDeadline.
func (c *portConn) SetWriteDeadline(t time.Time) error { return nil }
