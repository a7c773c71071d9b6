//go:build linux

package guest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

// http2Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// fuzzWait bounds every wait in the fuzz targets: generous, so that a slow
// (race-enabled, fuzzing) machine does not report a false crasher.
const fuzzWait = 5 * time.Second

// hangupPort is a fakePort that tells when the guest has seen a host
// disconnect: a read that began after the hang-up returned EOF, so the guest
// has drained the session and ended its connection before reading again.
type hangupPort struct {
	*fakePort
	gen  atomic.Int64 // bumped after each disconnect
	seen atomic.Int64 // gen at the start of the last read that returned EOF
}

func (p *hangupPort) Read(b []byte) (int, error) {
	g := p.gen.Load()
	n, err := p.fakePort.Read(b)
	if n == 0 && errors.Is(err, io.EOF) {
		p.seen.Store(g) // only the listener's read loop reads
	}
	return n, err
}

// hangUp disconnects the host and waits until the guest has seen it, so the
// next session cannot merge with this one.
func (p *hangupPort) hangUp(t testing.TB) {
	t.Helper()
	p.disconnect()
	g := p.gen.Add(1)
	deadline := time.Now().Add(fuzzWait)
	for p.seen.Load() < g {
		if time.Now().After(deadline) {
			t.Fatal("the guest did not see the host disconnect (session not drained)")
		}
		time.Sleep(time.Millisecond)
	}
}

// recordingConn records what the host writes.
type recordingConn struct {
	*hostConn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recordingConn) Write(b []byte) (int, error) {
	n, err := c.hostConn.Write(b)
	c.mu.Lock()
	c.buf.Write(b[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) recorded() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// fuzzAgent is a real agent server behind a portListener on a fake port.
type fuzzAgent struct {
	port *hangupPort
}

func newFuzzAgent(f *testing.F) *fuzzAgent {
	port := &hangupPort{fakePort: newFakePort()}
	l := newPortListener(port, "fuzz", nil)
	// An empty box root: nothing a fuzzed Exec asks for can be found or run.
	srv := NewServer(Config{Root: f.TempDir()})
	go srv.Serve(l)
	f.Cleanup(func() { srv.Stop(); l.Close() })
	return &fuzzAgent{port: port}
}

// hello runs one host session with a real gRPC client that calls Hello,
// then hangs up. It returns what the client wrote before Hello returned.
func (a *fuzzAgent) hello(t testing.TB) []byte {
	t.Helper()
	var (
		mu    sync.Mutex
		conn  *recordingConn
		dials int
	)
	cc, err := grpc.NewClient("passthrough:///agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			mu.Lock()
			defer mu.Unlock()
			// A redial would start a session on top of the failed one,
			// which the guest could not tell apart: fail instead.
			if dials++; dials > 1 {
				return nil, errors.New("redial: the first session failed")
			}
			conn = &recordingConn{hostConn: &hostConn{p: a.port.fakePort, session: a.port.connect()}}
			return conn, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fuzzWait)
	resp, err := pb.NewAgentClient(cc).Hello(ctx, &pb.HelloRequest{ProtocolVersion: pb.ProtocolVersion, HostVersion: "fuzz"})
	cancel()
	var rec []byte
	mu.Lock()
	if conn != nil {
		rec = conn.recorded()
	}
	mu.Unlock()
	cc.Close()
	a.port.hangUp(t)
	if err != nil {
		t.Fatalf("Hello on a fresh session: %v", err)
	}
	if resp.GetProtocolVersion() != pb.ProtocolVersion || resp.GetAgentVersion() == "" {
		t.Fatalf("Hello on a fresh session: %v", resp)
	}
	return rec
}

// FuzzAgentSession feeds one host session of arbitrary bytes (optionally
// after a valid HTTP/2 client preface) to the agent over the port transport,
// hangs up, and checks that a real client can still say Hello.
func FuzzAgentSession(f *testing.F) {
	a := newFuzzAgent(f)
	rec := a.hello(f)
	if !bytes.HasPrefix(rec, []byte(http2Preface)) {
		f.Fatalf("recorded Hello session does not start with the HTTP/2 preface: %q", rec)
	}
	frames := rec[len(http2Preface):]

	f.Add(false, []byte{})
	f.Add(false, []byte(http2Preface))
	f.Add(false, rec)
	f.Add(false, rec[:len(rec)/2])
	f.Add(false, rec[:len(http2Preface)/2])
	f.Add(false, []byte("GET / HTTP/1.1\r\nHost: agent\r\n\r\n"))
	f.Add(false, []byte("\x00\xff\xfe\x7f garbage \r\n\x00\x00\x04\x01"))
	f.Add(true, frames)
	f.Add(true, frames[:len(frames)/2])
	// A SETTINGS frame with a length that is not a multiple of 6.
	f.Add(true, []byte{0, 0, 5, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5})
	// A frame header announcing 16 MiB that never arrives.
	f.Add(true, []byte{0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1})

	f.Fuzz(func(t *testing.T, preface bool, data []byte) {
		msg := data
		if preface {
			msg = append([]byte(http2Preface), data...)
		}
		a.port.connect()
		if len(msg) > 0 {
			a.port.hostSend(msg)
		}
		a.port.hangUp(t)
		a.hello(t)
	})
}

// FuzzExecInput checks that any ExecInput the host can send unmarshals
// without panicking, round-trips, and that validating and resolving its
// start message (Server.prepare, which runs nothing) does not panic.
func FuzzExecInput(f *testing.F) {
	// A small box: accounts, an executable, a non-executable, symlinks.
	root := f.TempDir()
	for p, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nbad line\nuser:x:1000:1000::/home/user:/bin/sh\n-nis:x:1:1::/:\n",
		"etc/group":  "root:x:0:\nstaff:x:50:user, root\nbad\n",
		"bin/sh":     "#!/bin/true\n",
		"bin/text":   "not a program\n",
	} {
		hp := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(hp, []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	for _, step := range []error{
		os.Chmod(filepath.Join(root, "bin/sh"), 0o755),
		os.MkdirAll(filepath.Join(root, "home/user"), 0o755),
		os.MkdirAll(filepath.Join(root, "usr"), 0o755),
		os.Symlink("../bin", filepath.Join(root, "usr/bin")),
		os.Symlink("/../../..", filepath.Join(root, "up")),
		os.Symlink("loop", filepath.Join(root, "loop")),
	} {
		if step != nil {
			f.Fatal(step)
		}
	}
	servers := []*Server{NewServer(Config{Root: root}), NewServer(Config{})}

	seeds := []*pb.ExecInput{
		{},
		{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{}}},
		{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "true"}}}},
		{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{
			Name: "text", Env: []string{"PATH=/usr/bin:rel::/loop", "HOME="}, WorkingDir: "/up/../home/user",
			User: "user:staff", Tty: true, TimeoutMs: -1, KillGraceMs: -5, Rows: 1 << 31, Stdin: true,
		}}},
		{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "/bin/sh", WorkingDir: "relative", User: "4294967295"}}},
		{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "../x", User: "a:b:c", WorkingDir: "/loop"}}},
		{Msg: &pb.ExecInput_Stdin{Stdin: []byte("input\x00")}},
		{Msg: &pb.ExecInput_CloseStdin{CloseStdin: true}},
		{Msg: &pb.ExecInput_Signal{Signal: -1}},
		{Msg: &pb.ExecInput_Resize{Resize: &pb.Resize{Rows: 24, Cols: 80}}},
	}
	for _, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if len(b) > 1 {
			f.Add(b[:len(b)-1]) // truncated
		}
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // start with a huge length
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x01, 0xff})       // invalid UTF-8 name
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))

	f.Fuzz(func(t *testing.T, data []byte) {
		var in pb.ExecInput
		if err := proto.Unmarshal(data, &in); err != nil {
			return
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&in)
		if err != nil {
			t.Fatalf("re-marshal of %v: %v", &in, err)
		}
		var again pb.ExecInput
		if err := proto.Unmarshal(b, &again); err != nil {
			t.Fatalf("unmarshal of re-marshalled %v: %v", &in, err)
		}
		if !proto.Equal(&in, &again) {
			t.Fatalf("round trip changed the message:\n%v\n%v", &in, &again)
		}
		start := in.GetStart()
		if start == nil {
			return
		}
		for _, s := range servers {
			spec, err := s.prepare(start)
			if err != nil {
				continue
			}
			if spec.argv0 == "" || len(spec.argv) == 0 || spec.argv[0] != start.GetName() ||
				!filepath.IsAbs(spec.dir) || spec.grace <= 0 {
				t.Fatalf("prepare(%v) (root %q) = %+v", start, s.cfg.Root, spec)
			}
		}
	})
}
