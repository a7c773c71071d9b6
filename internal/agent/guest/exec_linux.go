package guest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

const (
	defaultPath      = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	defaultKillGrace = 2 * time.Second
	// chunkSize is the largest stdout/stderr message.
	chunkSize = 32 << 10
	// drainIdle is how long output is still awaited, once the process has
	// exited, while nothing arrives (a background child may hold the pipe).
	drainIdle = 250 * time.Millisecond
	// drainMax bounds the wait for output after exit even if it keeps coming.
	drainMax = 5 * time.Second
	// stdinQueue is how many stdin messages may wait for the process.
	stdinQueue = 64
)

// execSpec is a validated ExecStart, resolved against the box.
type execSpec struct {
	name    string // as requested, for messages
	argv0   string // path to exec, as the box sees it
	argv    []string
	env     []string
	dir     string
	cred    *syscall.Credential
	tty     bool
	stdin   bool
	rows    uint32
	cols    uint32
	timeout time.Duration
	grace   time.Duration
}

// startFailure is a failure to start the program that is reported as the
// process's own outcome (message on stderr, exit code 126 or 127), the way a
// shell reports it, rather than as an RPC error.
type startFailure struct {
	code int32
	msg  string
}

func (f *startFailure) Error() string { return f.msg }

// Exec runs one process; see proto.AgentServer.
func (s *Server) Exec(stream grpc.BidiStreamingServer[pb.ExecInput, pb.ExecOutput]) error {
	in, err := stream.Recv()
	if err != nil {
		return err
	}
	start := in.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "exec: the first message must be start")
	}
	if s.cfg.SetupError != nil {
		return status.Errorf(codes.FailedPrecondition, "exec: box is not set up: %v", s.cfg.SetupError)
	}
	spec, err := s.prepare(start)
	if err == nil {
		err = s.run(stream, spec)
	}
	var fail *startFailure
	if errors.As(err, &fail) {
		return sendFailure(stream, start.GetTty(), fail)
	}
	return err
}

// sendFailure reports a start failure as output plus an exit code.
func sendFailure(stream grpc.BidiStreamingServer[pb.ExecInput, pb.ExecOutput], tty bool, f *startFailure) error {
	msg := []byte(f.msg)
	out := &pb.ExecOutput{Msg: &pb.ExecOutput_Stderr{Stderr: msg}}
	if tty {
		out = &pb.ExecOutput{Msg: &pb.ExecOutput_Stdout{Stdout: msg}}
	}
	if err := stream.Send(out); err != nil {
		return err
	}
	return stream.Send(&pb.ExecOutput{Msg: &pb.ExecOutput_Exit{Exit: &pb.Exit{ExitCode: f.code}}})
}

// prepare validates start and resolves user, environment, working directory
// and program inside the box.
func (s *Server) prepare(start *pb.ExecStart) (*execSpec, error) {
	root := s.cfg.Root
	if start.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "exec: empty program name")
	}
	spec := &execSpec{
		name:    start.GetName(),
		argv:    append([]string{start.GetName()}, start.GetArgs()...),
		tty:     start.GetTty(),
		stdin:   start.GetStdin(),
		rows:    start.GetRows(),
		cols:    start.GetCols(),
		timeout: time.Duration(start.GetTimeoutMs()) * time.Millisecond,
		grace:   time.Duration(start.GetKillGraceMs()) * time.Millisecond,
	}
	if spec.grace <= 0 {
		spec.grace = defaultKillGrace
	}

	user, err := s.lookupUser(start.GetUser())
	if err != nil {
		return nil, err
	}
	if root != "" || start.GetUser() != "" {
		spec.cred = credential(user, agentIdentity())
	}

	spec.env = append([]string(nil), start.GetEnv()...)
	if _, ok := getenv(spec.env, "PATH"); !ok {
		spec.env = append(spec.env, "PATH="+defaultPath)
	}
	if _, ok := getenv(spec.env, "HOME"); !ok {
		spec.env = append(spec.env, "HOME="+user.Home)
	}
	if _, ok := getenv(spec.env, "TERM"); !ok && spec.tty {
		spec.env = append(spec.env, "TERM=xterm")
	}

	spec.dir = start.GetWorkingDir()
	if spec.dir == "" {
		spec.dir = "/"
	}
	if !filepath.IsAbs(spec.dir) {
		return nil, status.Errorf(codes.InvalidArgument, "working directory %q is not absolute", spec.dir)
	}
	if spec.dir != "/" && !s.fs.isDir(spec.dir) { // the root is always one
		return nil, status.Errorf(codes.NotFound, "working directory %q not found", spec.dir)
	}

	spec.argv0 = spec.name
	if !strings.Contains(spec.name, "/") {
		path, _ := getenv(spec.env, "PATH")
		spec.argv0, err = s.fs.lookPath(spec.name, path)
		switch {
		case errors.Is(err, errNotInPath):
			return nil, &startFailure{code: 127, msg: fmt.Sprintf("boxlite: exec: %v\n", err)}
		case err != nil:
			return nil, &startFailure{code: 126, msg: fmt.Sprintf("boxlite: exec: %v\n", err)}
		}
	}
	return spec, nil
}

// lookupUser resolves a user spec against the box's passwd and group files.
// With no box root and no spec it describes the agent's own user.
func (s *Server) lookupUser(spec string) (execUser, error) {
	passwd, err := s.fs.passwd.read(s.fs, "/etc/passwd")
	if err != nil {
		return execUser{}, status.Errorf(codes.Internal, "exec: %v", err)
	}
	groups, err := s.fs.group.read(s.fs, "/etc/group")
	if err != nil {
		return execUser{}, status.Errorf(codes.Internal, "exec: %v", err)
	}
	if s.cfg.Root == "" && spec == "" {
		spec = strconv.Itoa(os.Getuid()) + ":" + strconv.Itoa(os.Getgid())
	}
	u, err := resolveUser(spec, passwd, groups)
	switch {
	case errors.Is(err, errUnknownUser), errors.Is(err, errUnknownGroup):
		return execUser{}, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return execUser{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return u, nil
}

// credential returns the credential for u, or nil when it is self, the agent's
// own identity, which the child then simply keeps, saving the three system
// calls that set it. Without CAP_SETGID supplementary groups cannot be
// set.
func credential(u execUser, self identity) *syscall.Credential {
	if int(u.UID) == self.uid && int(u.GID) == self.gid && (self.uid != 0 || sameGroups(u.Groups, self.groups)) {
		return nil
	}
	if self.uid != 0 {
		return &syscall.Credential{Uid: u.UID, Gid: u.GID, NoSetGroups: true}
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
}

// identity is a process's effective uid, gid and supplementary groups.
type identity struct {
	uid, gid int
	groups   []int
}

// agentIdentity is the agent's identity, read once: it never changes
// after startup (PID 1 sets its groups before it serves).
var agentIdentity = sync.OnceValue(func() identity {
	groups, _ := syscall.Getgroups()
	return identity{uid: os.Geteuid(), gid: os.Getegid(), groups: groups}
})

// sameGroups reports whether want, as a set, equals have.
func sameGroups(want []uint32, have []int) bool {
	for _, g := range want {
		if !slices.Contains(have, int(g)) {
			return false
		}
	}
	for _, g := range have {
		if !slices.Contains(want, uint32(g)) {
			return false
		}
	}
	return true
}

func getenv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// execution is one running Exec.
type execution struct {
	stream grpc.BidiStreamingServer[pb.ExecInput, pb.ExecOutput]
	spec   *execSpec

	sendMu     sync.Mutex
	sendFailed bool

	stdin   *os.File   // process input (pipe write end or pty master); nil if none
	outputs []*os.File // stdout[, stderr] read ends, or the pty master
	child   []*os.File // the child's ends, closed once it started; nil: devNull
	devNull *os.File   // the server's /dev/null, shared
	exited  atomic.Bool
}

// send sends one message; after a failure (client gone) it only drops.
func (x *execution) send(m *pb.ExecOutput) {
	x.sendMu.Lock()
	defer x.sendMu.Unlock()
	if x.sendFailed {
		return
	}
	if err := x.stream.Send(m); err != nil {
		x.sendFailed = true
	}
}

// openIO creates the process's stdio.
func (x *execution) openIO(root string) error {
	if x.spec.tty {
		master, tty, err := openPTY(root)
		if err != nil {
			return err
		}
		x.stdin, x.outputs, x.child = master, []*os.File{master}, []*os.File{tty}
		rows, cols := x.spec.rows, x.spec.cols
		if rows == 0 || cols == 0 {
			rows, cols = 24, 80
		}
		return setWinsize(master, rows, cols)
	}
	if x.spec.stdin {
		r, w, err := pipe(false)
		if err != nil {
			return err
		}
		x.child, x.stdin = append(x.child, r), w
	} else {
		if x.devNull == nil {
			return errors.New("no /dev/null")
		}
		x.child = append(x.child, nil) // /dev/null
	}
	for range 2 {
		r, w, err := pipe(true)
		if err != nil {
			return err
		}
		x.outputs = append(x.outputs, r)
		x.child = append(x.child, w)
	}
	return nil
}

// pipe returns a pipe whose end for the agent (the read end if readEnd,
// else the write end) is non-blocking and uses the runtime poller, while
// the child's end stays blocking, as programs expect. This costs fewer
// system calls than os.Pipe, whose child end would be switched back.
func pipe(readEnd bool) (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	ours := p[1]
	if readEnd {
		ours = p[0]
	}
	if err := unix.SetNonblock(ours, true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}

func (x *execution) closeChild() {
	for _, f := range x.child {
		if f != nil {
			f.Close()
		}
	}
	x.child = nil
}

func (x *execution) closeAll() {
	x.closeChild()
	for _, f := range x.outputs {
		f.Close()
	}
	if x.stdin != nil {
		x.stdin.Close()
	}
}

// childFiles returns the descriptors for the child's fds 0, 1, 2. Fd puts
// the child's ends into blocking mode, as programs expect.
func (x *execution) childFiles() []uintptr {
	if x.spec.tty {
		fd := x.child[0].Fd()
		return []uintptr{fd, fd, fd}
	}
	fds := make([]uintptr, 3)
	for i, f := range x.child {
		if f == nil {
			f = x.devNull
		}
		fds[i] = f.Fd()
	}
	return fds
}

// run starts the process and streams until it has exited.
//
// Per exec it starts a goroutine per output and one for client messages
// (plus one for stdin, one for a timeout, when asked for): under software
// emulation every goroutine's start, park and wake-up is guest CPU the
// exec's round trip waits for.
func (s *Server) run(stream grpc.BidiStreamingServer[pb.ExecInput, pb.ExecOutput], spec *execSpec) error {
	x := &execution{stream: stream, spec: spec, devNull: s.devNull}
	defer x.closeAll()
	if err := x.openIO(s.cfg.Root); err != nil {
		return status.Errorf(codes.Internal, "exec: stdio: %v", err)
	}
	attr := &syscall.ProcAttr{
		Dir:   spec.dir,
		Env:   spec.env,
		Files: x.childFiles(),
		Sys: &syscall.SysProcAttr{
			Chroot:     s.cfg.Root,
			Credential: spec.cred,
			Setsid:     true,
			Setctty:    spec.tty,
			Ctty:       0,
		},
	}
	p, err := s.reaper.start(spec.argv0, spec.argv, attr)
	x.closeChild()
	if err != nil {
		code := int32(126)
		if errors.Is(err, syscall.ENOENT) {
			code = 127
		}
		return &startFailure{code: code, msg: fmt.Sprintf("boxlite: exec: %q: %v\n", spec.name, err)}
	}
	x.send(&pb.ExecOutput{Msg: &pb.ExecOutput_Started{Started: &pb.Started{Pid: int32(p.pid)}}})

	done := make(chan struct{}) // closed when the Exec is over
	defer close(done)

	// Output.
	pumped := make(chan struct{}, len(x.outputs))
	for i, f := range x.outputs {
		go func() {
			x.pump(f, i == 1)
			pumped <- struct{}{}
		}()
	}

	// Client messages (stdin, signals, resizes) and the client's going
	// away, which kills the process.
	var inputs chan *pb.ExecInput
	if x.stdin != nil {
		inputs = make(chan *pb.ExecInput, stdinQueue)
		go x.writeInput(inputs, done)
	}
	go x.receive(p, inputs, done)

	// Timeout: TERM, then KILL after the grace period.
	var timedOut atomic.Bool
	if spec.timeout > 0 {
		go func() {
			t := time.NewTimer(spec.timeout)
			defer t.Stop()
			select {
			case <-t.C:
			case <-p.done:
				return
			}
			timedOut.Store(true)
			p.signalGroup(syscall.SIGTERM)
			t.Reset(spec.grace)
			select {
			case <-t.C:
				p.signalGroup(syscall.SIGKILL)
			case <-p.done:
			}
		}()
	}

	<-p.done
	x.exited.Store(true)
	// Usually the outputs ended with the process; only when one is still
	// open (a background child holds it) does the drain need its timers.
	left := len(x.outputs)
ended:
	for left > 0 {
		select {
		case <-pumped:
			left--
		default:
			break ended
		}
	}
	if left > 0 {
		for _, f := range x.outputs {
			f.SetReadDeadline(time.Now().Add(drainIdle))
		}
		drain := time.NewTimer(drainMax)
		defer drain.Stop()
		for ; left > 0; left-- {
			select {
			case <-pumped:
			case <-drain.C:
				for _, f := range x.outputs {
					f.SetReadDeadline(time.Now()) // stops pumps at their next read
				}
				<-pumped
			}
		}
	}

	exit := &pb.Exit{TimedOut: timedOut.Load()}
	switch ws := p.status; {
	case ws.Exited():
		exit.ExitCode = int32(ws.ExitStatus())
	case ws.Signaled():
		exit.Signal = int32(ws.Signal())
		exit.ExitCode = 128 + exit.Signal
	}
	x.sendMu.Lock()
	defer x.sendMu.Unlock()
	return stream.Send(&pb.ExecOutput{Msg: &pb.ExecOutput_Exit{Exit: exit}})
}

// pumpBuffers recycles the output buffers of finished execs.
var pumpBuffers = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// pump streams one output until EOF, or until nothing more arrives for
// drainIdle after the process exited.
func (x *execution) pump(f *os.File, isStderr bool) {
	buf := pumpBuffers.Get().(*[chunkSize]byte)
	defer pumpBuffers.Put(buf)
	for {
		if x.exited.Load() {
			f.SetReadDeadline(time.Now().Add(drainIdle))
		}
		n, err := f.Read(buf[:])
		if n > 0 {
			b := append([]byte(nil), buf[:n]...)
			if isStderr {
				x.send(&pb.ExecOutput{Msg: &pb.ExecOutput_Stderr{Stderr: b}})
			} else {
				x.send(&pb.ExecOutput{Msg: &pb.ExecOutput_Stdout{Stdout: b}})
			}
		}
		if err != nil {
			return // EOF; EIO on a pty whose other side is closed; deadline
		}
	}
}

// receive handles client messages until the stream ends. Stdin data and
// close requests go through inputs, in order; without stdin (inputs nil)
// they are dropped. Once the client has half-closed, it waits for the
// client to go away (then kills) or for the Exec to end.
func (x *execution) receive(p *process, inputs chan<- *pb.ExecInput, done <-chan struct{}) {
	queue := func(m *pb.ExecInput) bool {
		if inputs == nil {
			return true
		}
		select {
		case inputs <- m:
			return true
		case <-done:
			return false
		}
	}
	for {
		in, err := x.stream.Recv()
		if err == io.EOF {
			if !x.spec.tty {
				queue(&pb.ExecInput{Msg: &pb.ExecInput_CloseStdin{CloseStdin: true}})
			}
			select {
			case <-x.stream.Context().Done():
				p.signalGroup(syscall.SIGKILL)
			case <-done:
			}
			return
		}
		if err != nil {
			p.signalGroup(syscall.SIGKILL) // no-op once the process is reaped
			return
		}
		switch m := in.GetMsg().(type) {
		case *pb.ExecInput_Stdin, *pb.ExecInput_CloseStdin:
			if !queue(in) {
				return
			}
		case *pb.ExecInput_Signal:
			if sig := m.Signal; sig > 0 && sig <= 64 {
				p.signalGroup(syscall.Signal(sig))
			}
		case *pb.ExecInput_Resize:
			if x.spec.tty && m.Resize != nil {
				setWinsize(x.outputs[0], m.Resize.GetRows(), m.Resize.GetCols())
			}
		}
	}
}

// writeInput writes stdin data to the process. Closing stdin closes the
// pipe; on a terminal it sends EOT (^D) instead, as a user would.
func (x *execution) writeInput(inputs <-chan *pb.ExecInput, done <-chan struct{}) {
	w := x.stdin
	for {
		var in *pb.ExecInput
		select {
		case in = <-inputs:
		case <-done:
			return
		}
		if w == nil {
			continue
		}
		switch m := in.GetMsg().(type) {
		case *pb.ExecInput_Stdin:
			if _, err := w.Write(m.Stdin); err != nil && !x.spec.tty {
				w.Close() // EPIPE: the process is not reading any more
				w = nil
			}
		case *pb.ExecInput_CloseStdin:
			if !m.CloseStdin {
				continue
			}
			if x.spec.tty {
				w.Write([]byte{0x04})
				continue
			}
			w.Close()
			w = nil
		}
	}
}
