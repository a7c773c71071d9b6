package boxlite

import (
	"io"
	"log/slog"
	"time"
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
