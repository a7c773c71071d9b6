package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/boxlite-go/boxlite/internal/agent/proto"
	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// DialFunc opens a fresh byte stream to the agent.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Client is a connection to one guest agent.
type Client struct {
	conn  *grpc.ClientConn
	api   proto.AgentClient
	hello *proto.HelloResponse
}

// outputWindow is the HTTP/2 flow-control window of each stream the host
// receives (a process's output): 4 MiB keeps a fast producer streaming
// across the host↔guest round trip.
const outputWindow = 4 << 20

// Dial connects to the agent and performs the version handshake. It waits
// for the agent until ctx ends, so it doubles as "wait for boot".
func Dial(ctx context.Context, dial DialFunc) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///boxlite-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return dial(ctx)
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  10 * time.Millisecond,
				Multiplier: 1.6,
				MaxDelay:   250 * time.Millisecond,
			},
			// A guest under software emulation may take long to answer
			// the HTTP/2 preface; the caller's ctx bounds the wait.
			MinConnectTimeout: 10 * time.Minute,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)),
		// Static windows, large enough for output at full speed: gRPC's
		// default probes bandwidth with a PING per burst of data, which
		// made every exec a few guest wake-ups longer.
		grpc.WithInitialWindowSize(outputWindow),
		grpc.WithInitialConnWindowSize(4*outputWindow),
	)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	c := &Client{conn: conn, api: proto.NewAgentClient(conn)}
	hello, err := c.api.Hello(ctx, &proto.HelloRequest{ProtocolVersion: proto.ProtocolVersion, HostVersion: "boxlite-go"}, grpc.WaitForReady(true))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent: hello: %w", mapError(err))
	}
	if hello.ProtocolVersion != proto.ProtocolVersion {
		conn.Close()
		return nil, fmt.Errorf("agent: speaks protocol %d, host %d: %w", hello.ProtocolVersion, proto.ProtocolVersion, errdefs.ErrProtocol)
	}
	c.hello = hello
	return c, nil
}

// AgentVersion is the version the agent reported in Hello.
func (c *Client) AgentVersion() string { return c.hello.GetAgentVersion() }

// KernelRelease is the guest kernel release reported in Hello.
func (c *Client) KernelRelease() string { return c.hello.GetKernelRelease() }

// API is the raw gRPC client, for proxies.
func (c *Client) API() proto.AgentClient { return c.api }

// Close drops the connection; running processes in the guest are killed by
// the agent when their streams break.
func (c *Client) Close() error { return c.conn.Close() }

// Sync flushes the guest's filesystems.
func (c *Client) Sync(ctx context.Context) error {
	_, err := c.api.Sync(ctx, &proto.SyncRequest{})
	return mapError(err)
}

// Shutdown asks the guest to sync and power off.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.api.Shutdown(ctx, &proto.ShutdownRequest{})
	return mapError(err)
}

// ConfigureNetwork has the guest bring its NIC up as cfg says; it returns
// the interface's name.
func (c *Client) ConfigureNetwork(ctx context.Context, cfg *proto.NetworkConfig) (string, error) {
	st, err := c.api.ConfigureNetwork(ctx, cfg)
	if err != nil {
		return "", mapError(err)
	}
	return st.GetInterface(), nil
}

// Ping performs a Hello round trip.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.api.Hello(ctx, &proto.HelloRequest{ProtocolVersion: proto.ProtocolVersion})
	return mapError(err)
}

// Process is one command running in the guest.
type Process struct {
	cancel context.CancelFunc
	stream proto.Agent_ExecClient
	sendMu sync.Mutex

	stdout, stderr *buffer
	pid            int

	done chan struct{}
	exit *proto.Exit
	err  error
}

// Exec starts a process. stdin, when not nil, is copied to the process and
// closed at its EOF; start.Stdin is set accordingly. The returned process
// keeps running after ctx ends: ctx bounds only the start.
func (c *Client) Exec(ctx context.Context, start *proto.ExecStart, stdin io.Reader) (*Process, error) {
	start.Stdin = stdin != nil
	sctx, cancel := context.WithCancel(context.Background())
	stream, err := c.api.Exec(sctx)
	if err != nil {
		cancel()
		return nil, mapError(err)
	}
	p := &Process{
		cancel: cancel,
		stream: stream,
		stdout: newBuffer(),
		stderr: newBuffer(),
		done:   make(chan struct{}),
	}
	if err := p.send(&proto.ExecInput{Msg: &proto.ExecInput_Start{Start: start}}); err != nil {
		cancel()
		return nil, mapError(err)
	}
	// The first answer tells whether the process started; wait for it
	// without letting ctx abandon a started process.
	first := make(chan error, 1)
	var msg *proto.ExecOutput
	go func() {
		var err error
		msg, err = stream.Recv()
		first <- err
	}()
	select {
	case err = <-first:
	case <-ctx.Done():
		cancel()
		<-first
		return nil, ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, mapError(err)
	}
	if s := msg.GetStarted(); s != nil {
		p.pid = int(s.Pid)
		msg = nil
	}
	go p.pump(msg)
	if stdin != nil {
		go p.copyStdin(stdin)
	}
	return p, nil
}

func (p *Process) send(in *proto.ExecInput) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.stream.Send(in)
}

// pump moves everything the agent sends into the output buffers until the
// exit message or a broken stream.
func (p *Process) pump(first *proto.ExecOutput) {
	defer close(p.done)
	defer p.cancel()
	msg := first
	for {
		if msg == nil {
			var err error
			msg, err = p.stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("agent closed the stream without an exit status")
				}
				p.err = mapError(err)
				p.stdout.close(p.err)
				p.stderr.close(p.err)
				return
			}
		}
		switch m := msg.Msg.(type) {
		case *proto.ExecOutput_Stdout:
			p.stdout.write(m.Stdout)
		case *proto.ExecOutput_Stderr:
			p.stderr.write(m.Stderr)
		case *proto.ExecOutput_Started:
			p.pid = int(m.Started.Pid)
		case *proto.ExecOutput_Exit:
			p.exit = m.Exit
			p.stdout.close(nil)
			p.stderr.close(nil)
			return
		}
		msg = nil
	}
}

func (p *Process) copyStdin(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			if p.send(&proto.ExecInput{Msg: &proto.ExecInput_Stdin{Stdin: chunk}}) != nil {
				return
			}
		}
		if err != nil {
			_ = p.send(&proto.ExecInput{Msg: &proto.ExecInput_CloseStdin{CloseStdin: true}})
			return
		}
		select {
		case <-p.done:
			return
		default:
		}
	}
}

// PID is the process id inside the guest (0 when it never started).
func (p *Process) PID() int { return p.pid }

// Stdout streams the process's standard output (the terminal with TTY).
func (p *Process) Stdout() io.Reader { return p.stdout }

// Stderr streams the process's standard error (empty with TTY).
func (p *Process) Stderr() io.Reader { return p.stderr }

// Done is closed when the process has ended or its stream broke.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait returns the exit status once the process ended. It does not depend
// on the caller reading Stdout or Stderr.
func (p *Process) Wait(ctx context.Context) (*proto.Exit, error) {
	select {
	case <-p.done:
		return p.exit, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Signal delivers sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.control(&proto.ExecInput{Msg: &proto.ExecInput_Signal{Signal: int32(sig)}})
}

// Resize changes the TTY's window size.
func (p *Process) Resize(rows, cols int) error {
	return p.control(&proto.ExecInput{Msg: &proto.ExecInput_Resize{Resize: &proto.Resize{Rows: uint32(rows), Cols: uint32(cols)}}})
}

func (p *Process) control(in *proto.ExecInput) error {
	select {
	case <-p.done:
		return fmt.Errorf("process has exited: %w", errdefs.ErrInvalidState)
	default:
	}
	return mapError(p.send(in))
}

// Close abandons the process: the agent kills it when the stream breaks.
func (p *Process) Close() { p.cancel() }

// mapError turns gRPC status errors into the project's sentinels.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		if strings.Contains(msg, "unknown user") || strings.Contains(msg, "unknown group") {
			return fmt.Errorf("%s: %w", msg, errdefs.ErrUnknownUser)
		}
		return fmt.Errorf("%s: %w", msg, errdefs.ErrNotFound)
	case codes.InvalidArgument:
		return fmt.Errorf("%s: %w", msg, errdefs.ErrInvalidArgument)
	case codes.FailedPrecondition:
		return fmt.Errorf("%s: %w", msg, errdefs.ErrProtocol)
	case codes.Unavailable:
		return fmt.Errorf("agent connection lost: %s: %w", msg, errdefs.ErrBoxDown)
	case codes.Canceled:
		return fmt.Errorf("%s: %w", msg, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", msg, context.DeadlineExceeded)
	}
	return fmt.Errorf("agent: %s (%s)", msg, st.Code())
}
