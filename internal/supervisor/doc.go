// Package supervisor runs one box's VM in a process of its own, so that a
// box can outlive the program that started it (detach) and be reached by
// other processes (the CLI, a server) on the same home dir.
//
// The supervisor is the host program re-executed (as lima re-executes
// limactl for its host agent): the root package's init function calls Main
// when the environment variable Env is set. The supervisor owns QEMU (tied
// to it with Pdeathsig), holds the only connection to the guest agent's
// virtio-serial port, and serves the same gRPC Agent service on a unix
// socket as a proxy, so any number of processes can run commands in the
// box. It holds an exclusive flock on its lock file for its whole life:
// a lock that can be taken means the supervisor is gone. When the VM ends
// it writes why to its exit file and exits.
//
// A box may have a main process (Config.Main): the supervisor starts it
// right after boot, appends its output to a log, records its end in a
// state file (MainState), and then stops the box; a stop request gives it
// SIGTERM and a grace first.
package supervisor
