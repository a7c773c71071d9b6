package guest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

// Version is the agent's version, reported by Hello. Set at link time with
// -ldflags "-X github.com/boxlite-go/boxlite/internal/agent/guest.Version=...".
var Version = "dev"

// streamWindow is the HTTP/2 flow-control window of each stream the agent
// receives (stdin); a fixed window also turns off gRPC's bandwidth probes.
const streamWindow = 1 << 20

// streamWorkers is how many goroutines are kept to run streams; more
// concurrent streams get a goroutine each, as without workers.
const streamWorkers = 4

// Config configures a Server.
type Config struct {
	// Root is the box's root directory as the agent sees it (/box in the VM).
	// Processes are chrooted into it; users, PATH and working directories are
	// resolved inside it. "" (or "/") means no chroot, and with "" a process
	// without an explicit user runs as the agent's own user.
	Root string

	// ReapAll makes the server reap every child of the process with
	// wait4(-1), orphans included. Required for PID 1, wrong elsewhere: it
	// would steal the exit statuses of the process's other children.
	ReapAll bool

	// PowerOff is called by Shutdown after the reply has been sent, to
	// unmount and power off (or reboot) the machine. nil: Shutdown fails
	// with codes.Unimplemented.
	PowerOff func(reboot bool)

	// SetupError, if set, is why the box could not be set up (e.g. the root
	// disk did not mount). Exec then fails with codes.FailedPrecondition;
	// Hello, Sync and Shutdown keep working so the host can diagnose and stop.
	SetupError error

	// Logger receives the agent's log; nil discards it.
	Logger *slog.Logger
}

// Server implements proto.AgentServer.
type Server struct {
	pb.UnimplementedAgentServer

	cfg Config
	fs  *boxFS
	// devNull is the stdin of processes without one. Opened once, not per
	// exec; if it cannot be opened, Exec reports the failure.
	devNull *os.File
	log     *slog.Logger
	reaper  reaper
	grpc    *grpc.Server

	shutdownOnce sync.Once
}

var _ pb.AgentServer = (*Server)(nil)

var (
	initReaperOnce sync.Once
	theInitReaper  *initReaper
)

// NewServer returns a Server for cfg. With cfg.ReapAll it starts the
// process-wide reaper (once per process).
func NewServer(cfg Config) *Server {
	if cfg.Root == "/" {
		cfg.Root = ""
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, fs: newBoxFS(cfg.Root), log: log, reaper: childReaper{}}
	if f, err := os.Open(os.DevNull); err == nil {
		s.devNull = f
	} else {
		log.Error("open /dev/null", "err", err)
	}
	if cfg.ReapAll {
		initReaperOnce.Do(func() { theInitReaper = newInitReaper() })
		s.reaper = theInitReaper
	}
	s.grpc = grpc.NewServer(
		// Static flow-control windows: with gRPC's default, every exec also
		// cost a bandwidth-estimation PING each way, and their acks, which
		// under software emulation are guest wake-ups the exec waits for.
		// 1 MiB per stream bounds what stdin may buffer here.
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(4*streamWindow),
		// Long-lived goroutines run the streams: a new goroutine per exec
		// had to grow (copy) its stack on the way to the fork.
		grpc.NumStreamWorkers(streamWorkers),
		// The host may ping idle connections to detect a dead guest.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             time.Second,
			PermitWithoutStream: true,
		}),
	)
	pb.RegisterAgentServer(s.grpc, s)
	return s
}

// Serve serves the agent protocol on l until Stop. It may be called for
// several listeners at once (virtio-serial and vsock).
func (s *Server) Serve(l net.Listener) error {
	return s.grpc.Serve(l)
}

// Stop closes all listeners and connections. Running processes are killed
// as their Exec streams end.
func (s *Server) Stop() {
	s.grpc.Stop()
}

// Hello implements the version handshake.
func (s *Server) Hello(ctx context.Context, req *pb.HelloRequest) (*pb.HelloResponse, error) {
	if req.GetProtocolVersion() != pb.ProtocolVersion {
		return nil, status.Errorf(codes.FailedPrecondition,
			"protocol version mismatch: host speaks %d, agent speaks %d",
			req.GetProtocolVersion(), pb.ProtocolVersion)
	}
	var uts unix.Utsname
	release := ""
	if err := unix.Uname(&uts); err == nil {
		release = unix.ByteSliceToString(uts.Release[:])
	}
	s.log.Info("host connected", "host_version", req.GetHostVersion())
	return &pb.HelloResponse{
		ProtocolVersion: pb.ProtocolVersion,
		AgentVersion:    Version,
		KernelRelease:   release,
	}, nil
}

// Sync flushes all filesystems.
func (s *Server) Sync(ctx context.Context, req *pb.SyncRequest) (*pb.SyncResponse, error) {
	unix.Sync()
	return &pb.SyncResponse{}, nil
}

// shutdownDelay lets the Shutdown reply reach the host before power-off.
const shutdownDelay = 100 * time.Millisecond

// Shutdown syncs, replies, then powers the machine off through
// Config.PowerOff.
func (s *Server) Shutdown(ctx context.Context, req *pb.ShutdownRequest) (*pb.ShutdownResponse, error) {
	if s.cfg.PowerOff == nil {
		return nil, status.Error(codes.Unimplemented, "shutdown: not supported by this agent")
	}
	unix.Sync()
	reboot := req.GetReboot()
	s.shutdownOnce.Do(func() {
		s.log.Info("shutdown requested", "reboot", reboot)
		time.AfterFunc(shutdownDelay, func() { s.cfg.PowerOff(reboot) })
	})
	return &pb.ShutdownResponse{}, nil
}
