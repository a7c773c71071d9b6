package supervisor

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

// proxy serves the Agent service by forwarding every call to the guest.
type proxy struct {
	pb.UnimplementedAgentServer
	up pb.AgentClient
	// main is the box's main process (nil without one): Shutdown stops it
	// first, as docker stop does.
	main *mainRun
}

func (p *proxy) Hello(ctx context.Context, r *pb.HelloRequest) (*pb.HelloResponse, error) {
	return p.up.Hello(ctx, r)
}

func (p *proxy) Sync(ctx context.Context, r *pb.SyncRequest) (*pb.SyncResponse, error) {
	return p.up.Sync(ctx, r)
}

// Shutdown gives the main process SIGTERM and up to mainStopGrace (less
// when the caller's deadline is nearer) to end before the guest powers off.
func (p *proxy) Shutdown(ctx context.Context, r *pb.ShutdownRequest) (*pb.ShutdownResponse, error) {
	grace := mainStopGrace
	if d, ok := ctx.Deadline(); ok && time.Until(d)-time.Second < grace {
		grace = max(time.Until(d)-time.Second, 0)
	}
	p.main.terminate(grace)
	return p.up.Shutdown(ctx, r)
}

func (p *proxy) ConfigureNetwork(ctx context.Context, r *pb.NetworkConfig) (*pb.NetworkStatus, error) {
	return p.up.ConfigureNetwork(ctx, r)
}

// Exec pumps the client's messages up and the guest's answers down; the
// upstream stream lives as long as the client's.
func (p *proxy) Exec(down grpc.BidiStreamingServer[pb.ExecInput, pb.ExecOutput]) error {
	up, err := p.up.Exec(down.Context())
	if err != nil {
		return err
	}
	go func() {
		for {
			in, err := down.Recv()
			if err != nil {
				up.CloseSend()
				return
			}
			if up.Send(in) != nil {
				return
			}
		}
	}()
	for {
		out, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := down.Send(out); err != nil {
			return err
		}
	}
}
