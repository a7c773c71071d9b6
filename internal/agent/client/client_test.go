package client

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/boxlite-go/boxlite/internal/agent/proto"
	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// fakeAgent answers Exec with scripted output; it stands in for the guest
// in tests of the host-side plumbing only.
type fakeAgent struct {
	proto.UnimplementedAgentServer
	version uint32
}

func (f *fakeAgent) Hello(ctx context.Context, r *proto.HelloRequest) (*proto.HelloResponse, error) {
	return &proto.HelloResponse{ProtocolVersion: f.version, AgentVersion: "fake"}, nil
}

func (f *fakeAgent) Exec(s proto.Agent_ExecServer) error {
	in, err := s.Recv()
	if err != nil {
		return err
	}
	st := in.GetStart()
	switch st.Name {
	case "unknown-user":
		return status.Error(codes.NotFound, `unknown user "x"`)
	case "big":
		s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Started{Started: &proto.Started{Pid: 7}}})
		chunk := make([]byte, 32<<10)
		for range 64 { // 2 MiB nobody reads before Wait
			if err := s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Stdout{Stdout: chunk}}); err != nil {
				return err
			}
		}
		s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Stderr{Stderr: []byte("done\n")}})
		return s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Exit{Exit: &proto.Exit{ExitCode: 3}}})
	case "cat":
		s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Started{Started: &proto.Started{Pid: 8}}})
		for {
			in, err := s.Recv()
			if err != nil {
				return err
			}
			if in.GetCloseStdin() {
				return s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Exit{Exit: &proto.Exit{}}})
			}
			s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Stdout{Stdout: in.GetStdin()}})
		}
	case "hang":
		s.Send(&proto.ExecOutput{Msg: &proto.ExecOutput_Started{Started: &proto.Started{Pid: 9}}})
		<-s.Context().Done()
		return nil
	}
	return status.Error(codes.InvalidArgument, "unexpected")
}

func serve(t *testing.T, f *fakeAgent) (DialFunc, func()) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	proto.RegisterAgentServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, srv.Stop
}

func dial(t *testing.T, d DialFunc) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestWaitDoesNotNeedReaders(t *testing.T) {
	d, _ := serve(t, &fakeAgent{version: proto.ProtocolVersion})
	c := dial(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.Exec(ctx, &proto.ExecStart{Name: "big"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	exit, err := p.Wait(ctx)
	if err != nil || exit.ExitCode != 3 {
		t.Fatalf("wait: %v %v", exit, err)
	}
	n, _ := io.Copy(io.Discard, p.Stdout())
	e, _ := io.ReadAll(p.Stderr())
	if n != 2<<20 || string(e) != "done\n" || p.PID() != 7 {
		t.Fatalf("stdout %d bytes, stderr %q, pid %d", n, e, p.PID())
	}
}

func TestStdinRoundTrip(t *testing.T) {
	d, _ := serve(t, &fakeAgent{version: proto.ProtocolVersion})
	c := dial(t, d)
	ctx := context.Background()
	in := strings.Repeat("x", 100000)
	p, err := c.Exec(ctx, &proto.ExecStart{Name: "cat"}, strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(p.Stdout())
	if _, err := p.Wait(ctx); err != nil || string(out) != in {
		t.Fatalf("got %d bytes, err %v", len(out), err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	d, stop := serve(t, &fakeAgent{version: proto.ProtocolVersion})
	c := dial(t, d)
	ctx := context.Background()
	if _, err := c.Exec(ctx, &proto.ExecStart{Name: "unknown-user"}, nil); !errors.Is(err, errdefs.ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
	p, err := c.Exec(ctx, &proto.ExecStart{Name: "hang"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop() // the guest goes away mid-exec
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := p.Wait(wctx); !errors.Is(err, errdefs.ErrBoxDown) {
		t.Fatalf("wait after the agent died: %v, want ErrBoxDown", err)
	}
	if _, err := io.ReadAll(p.Stdout()); !errors.Is(err, errdefs.ErrBoxDown) {
		t.Fatalf("stdout read after the agent died: %v", err)
	}
}

func TestVersionMismatch(t *testing.T) {
	d, _ := serve(t, &fakeAgent{version: 99})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, d); !errors.Is(err, errdefs.ErrProtocol) {
		t.Fatalf("dial: %v, want ErrProtocol", err)
	}
}

func TestBufferReadsInOrder(t *testing.T) {
	b := newBuffer()
	go func() {
		for _, s := range []string{"ab", "", "cde", "f"} {
			b.write([]byte(s))
		}
		b.close(nil)
	}()
	got, err := io.ReadAll(io.LimitReader(b, 100))
	if err != nil || string(got) != "abcdef" {
		t.Fatalf("%q %v", got, err)
	}
}
