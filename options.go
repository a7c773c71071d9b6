package boxlite

import (
	"io"
	"log/slog"
	"time"

	"github.com/boxlite-go/boxlite/internal/vnet"
)

// Defaults applied to zero values.
const (
	DefaultCPUs       = 1
	DefaultMemoryMiB  = 512
	DefaultDiskSizeGB = 10
	// DefaultBootTimeout bounds Start's wait for the guest agent. Software
	// emulation boots in about two seconds; the margin covers loaded hosts.
	DefaultBootTimeout = 2 * time.Minute
	// DefaultKillGrace is how long a timed-out command gets between
	// SIGTERM and SIGKILL.
	DefaultKillGrace = 2 * time.Second
)

// Options configure a Runtime.
type Options struct {
	// HomeDir holds caches and boxes. Default: $BOXLITE_HOME, else
	// ~/.boxlite.
	HomeDir string
	// Kernel is the guest kernel (a bzImage). Default: $BOXLITE_KERNEL,
	// else the newest /boot/vmlinuz-*-cloud-amd64.
	Kernel string
	// AgentPath is the static guest agent binary. Default: $BOXLITE_AGENT,
	// else boxlite-agent next to the running executable, else in PATH.
	AgentPath string
	// Accel is "kvm", "tcg" or "" to pick KVM when /dev/kvm is usable.
	// Default: $BOXLITE_ACCEL.
	Accel string
	// ImageRegistries are tried in order for unqualified image names.
	ImageRegistries []Registry
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger

	// slirp ($BOXLITE_NET_BASELINE=slirp) gives boxes QEMU's built-in
	// slirp instead of the user-mode network: the network benchmarks'
	// baseline. It has no egress policy, so boxes with AllowNet refuse it.
	slirp bool
}

// Registry is an OCI registry the runtime may pull from.
type Registry struct {
	Host          string
	Insecure      bool
	SkipTLSVerify bool
	Username      string
	Password      string
}

// BoxOptions describe a box. Zero values mean the defaults above.
type BoxOptions struct {
	// Image is an OCI image reference. Image pulls are not available yet;
	// use Rootfs.
	Image string
	// Rootfs is a host directory (turned into the box's ext4 root disk) or
	// an ext4 image file (used read-only under the box's own overlay).
	Rootfs     string
	CPUs       int
	MemoryMiB  int
	DiskSizeGB int
	// Env ("K=V"), WorkingDir and User are the defaults of every command.
	Env        []string
	WorkingDir string
	User       string
	// Entrypoint and Cmd make the box's command as docker does (see
	// Box.Command); each defaults to the image's.
	Entrypoint []string
	Cmd        []string
	// MainProcess makes the box's command its main process, as a
	// container's: every Start runs it right after boot, its stdout and
	// stderr go to a log (Box.Logs; each run appends), and when it exits
	// the box records the exit code (BoxInfo.ExitCode) and stops. Stop
	// gives it SIGTERM and a few seconds before the guest powers off. The
	// zero value: no main process; the box idles until stopped and runs
	// what Exec asks. Create fails with ErrInvalidArgument when the box has
	// no command (no Entrypoint or Cmd, from the options or the image).
	MainProcess bool
	AutoRemove  bool
	Detach      bool
	Labels      map[string]string

	// Network is NetworkEnabled (the default) or NetworkDisabled (no
	// network card at all: only lo in the box).
	Network NetworkMode
	// Ports are forwarded from the host into the box.
	Ports []PortMapping
	// AllowNet is the egress allow-list, enforced on the host side:
	// exact host names ("api.example.com"), wildcards ("*.example.com":
	// names strictly below), IP addresses, CIDRs, HostAlias (the host's
	// 127.0.0.1) and "*" (anywhere). Empty means anywhere. Host names
	// are checked against the DNS answers the box got and against the
	// TLS SNI / HTTP Host it sends; DNS queries for names outside the
	// list are refused. Cloud metadata (169.254.0.0/16) is never
	// reachable; the host's loopback only when listed explicitly (by
	// HostAlias, an address in 127.0.0.0/8, or a listed name that
	// resolves there).
	AllowNet []string
	// Hosts are static DNS answers for the box (docker's --add-host):
	// name → IP address. An answer in the host's 127.0.0.0/16 reaches
	// the host's loopback (see HostAlias), under AllowNet like any other.
	Hosts map[string]string
}

// NetworkMode says whether a box has a network card.
type NetworkMode string

// Network modes.
const (
	NetworkEnabled  NetworkMode = ""
	NetworkDisabled NetworkMode = "disabled"
)

// HostAlias is the name by which a box reaches the host's 127.0.0.1, when
// its AllowNet lists it. The box sees the host's 127.0.a.b at 198.18.a.b.
const HostAlias = "host.boxlite.internal"

// PortMapping forwards a host port to a box port.
type PortMapping struct {
	// Protocol is "tcp" (the default) or "udp".
	Protocol string
	// HostIP is the host address to listen on; "" means 127.0.0.1.
	HostIP string
	// HostPort 0 picks a free port, reported in BoxInfo.Ports.
	HostPort int
	BoxPort  int
}

// String formats p as docker's -p does: HOSTIP:HOSTPORT:BOXPORT/PROTO.
func (p PortMapping) String() string {
	return p.toVnet().String()
}

// ParsePortMapping parses docker's -p syntax:
// [HOSTIP:]HOSTPORT:BOXPORT[/tcp|/udp].
func ParsePortMapping(s string) (PortMapping, error) {
	p, err := vnet.ParsePort(s)
	if err != nil {
		return PortMapping{}, err
	}
	return portFromVnet(p), nil
}

// BoxMetrics are a running box's counters.
type BoxMetrics struct {
	// NetRxBytes and NetTxBytes count the bytes the box's network card
	// received and sent (Ethernet frames).
	NetRxBytes, NetTxBytes uint64
}

// NetEvent is one entry of a box's egress audit log.
type NetEvent struct {
	Time time.Time
	// Proto is "tcp", "udp" or "dns".
	Proto string
	// Dst is the destination the host dialed (ip:port); "" for DNS.
	Dst string
	// Host is the host name involved, when known (DNS question, a name
	// the destination was resolved from, TLS SNI or HTTP Host).
	Host   string
	Allow  bool
	Reason string
}

// Command is one process to run in a box.
type Command struct {
	Name string
	Args []string
	// Env ("K=V") is added to the box's environment, overriding keys.
	Env        []string
	WorkingDir string
	// User is a name, a uid, or user:group, resolved in the box's
	// /etc/passwd and /etc/group.
	User string
	// TTY gives the process a terminal; its output then all arrives on
	// Stdout.
	TTY bool
	// Rows and Cols size the terminal (default 24x80).
	Rows, Cols int
	// Timeout, when positive, sends SIGTERM after that long, then SIGKILL
	// after KillGrace (default DefaultKillGrace).
	Timeout   time.Duration
	KillGrace time.Duration
	// Stdin, when not nil, is copied to the process; its EOF closes the
	// process's stdin. nil gives the process an empty stdin.
	Stdin io.Reader
}

// ExecResult is how a command ended.
type ExecResult struct {
	// ExitCode is the process's exit status, or 128+signal when a signal
	// killed it (as shells and docker report it).
	ExitCode int
	// Signal is the signal that killed the process, 0 otherwise.
	Signal int
	// TimedOut is set when Command.Timeout ended the process.
	TimedOut bool
}

// Status is where a box is in its lifecycle.
type Status string

// Box statuses.
const (
	StatusConfigured Status = "configured"
	StatusStarting   Status = "starting"
	StatusRunning    Status = "running"
	StatusStopping   Status = "stopping"
	StatusStopped    Status = "stopped"
	StatusPaused     Status = "paused"
)

// BoxInfo is a snapshot of a box's state.
type BoxInfo struct {
	ID        string
	Name      string
	Status    Status
	Image     string
	Rootfs    string
	CPUs      int
	MemoryMiB int
	CreatedAt time.Time
	StartedAt time.Time
	// PID is the VMM's process id while running.
	PID int
	// Error tells why the box went down unexpectedly (guest panic, VMM
	// killed), or why its last start failed; empty after a requested stop.
	Error string
	// Network is the box's network mode; Ports its forwards, with the
	// host ports picked for port 0 while the box runs.
	Network NetworkMode
	Ports   []PortMapping
	// LastFreezePause is how long the VM was paused by the last live
	// Clone or Export this process made of it.
	LastFreezePause time.Duration
	// MainCommand is the argv of the box's main process
	// (BoxOptions.MainProcess); nil for a box without one.
	MainCommand []string
	// ExitCode is how the main process's latest run ended (docker's
	// State.ExitCode): its exit status, 128+n for a death by signal n, and
	// 137 when it was still running when the box stopped or went down. 0
	// while it runs and before its first run; FinishedAt tells these apart.
	ExitCode int
	// FinishedAt is when the main process's latest run ended; zero while
	// it runs, before its first run, and for a box without one.
	FinishedAt time.Time
}
