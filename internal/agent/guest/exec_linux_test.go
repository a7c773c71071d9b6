package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

// startServer serves a Server for cfg on a unix socket and returns a client.
func startServer(t *testing.T, cfg Config) pb.AgentClient {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(cfg)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewAgentClient(cc)
}

type execResult struct {
	started bool
	pid     int32
	stdout  string
	stderr  string
	exit    *pb.Exit
	err     error // RPC error
}

// runExec sends start and inputs, half-closes, and collects the output.
func runExec(ctx context.Context, t *testing.T, client pb.AgentClient, start *pb.ExecStart, inputs ...*pb.ExecInput) execResult {
	t.Helper()
	stream, err := client.Exec(ctx)
	if err != nil {
		return execResult{err: err}
	}
	msgs := append([]*pb.ExecInput{{Msg: &pb.ExecInput_Start{Start: start}}}, inputs...)
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the server ended the stream; Recv reports why
		}
	}
	stream.CloseSend()
	return collect(t, stream)
}

// collect reads an Exec stream to its end, checking the message order.
func collect(t *testing.T, stream pb.Agent_ExecClient) execResult {
	t.Helper()
	var r execResult
	var out, errOut strings.Builder
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			r.err = err
			break
		}
		if r.exit != nil {
			t.Errorf("message after exit: %v", m)
		}
		switch m := m.GetMsg().(type) {
		case *pb.ExecOutput_Started:
			if r.started || out.Len() > 0 || errOut.Len() > 0 {
				t.Errorf("started is not the first message")
			}
			r.started, r.pid = true, m.Started.GetPid()
		case *pb.ExecOutput_Stdout:
			out.Write(m.Stdout)
		case *pb.ExecOutput_Stderr:
			errOut.Write(m.Stderr)
		case *pb.ExecOutput_Exit:
			r.exit = m.Exit
		}
	}
	r.stdout, r.stderr = out.String(), errOut.String()
	return r
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHello(t *testing.T) {
	client := startServer(t, Config{})
	ctx := testContext(t)
	resp, err := client.Hello(ctx, &pb.HelloRequest{ProtocolVersion: pb.ProtocolVersion, HostVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetProtocolVersion() != pb.ProtocolVersion || resp.GetAgentVersion() != Version || resp.GetKernelRelease() == "" {
		t.Fatalf("Hello = %v", resp)
	}
	_, err = client.Hello(ctx, &pb.HelloRequest{ProtocolVersion: 99})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "host speaks 99, agent speaks 1") {
		t.Fatalf("Hello(99) = %v, want FailedPrecondition naming both versions", err)
	}
}

func TestExec(t *testing.T) {
	client := startServer(t, Config{})
	noExec := t.TempDir()
	if err := os.WriteFile(filepath.Join(noExec, "notexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		start      *pb.ExecStart
		wantOut    string
		wantErrOut string
		wantCode   int32
		notStarted bool
	}{
		{name: "echo", start: &pb.ExecStart{Name: "echo", Args: []string{"hello", "world"}}, wantOut: "hello world\n"},
		{name: "true", start: &pb.ExecStart{Name: "true"}},
		{name: "false", start: &pb.ExecStart{Name: "false"}, wantCode: 1},
		{name: "exit 7", start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "exit 7"}}, wantCode: 7},
		{name: "absolute path", start: &pb.ExecStart{Name: "/bin/echo", Args: []string{"abs"}}, wantOut: "abs\n"},
		{name: "stdout and stderr", start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "echo out; echo err >&2"}}, wantOut: "out\n", wantErrOut: "err\n"},
		{name: "env", start: &pb.ExecStart{Name: "sh", Args: []string{"-c", `echo "$FOO|$PATH|$HOME|$TERM"`}, Env: []string{"FOO=bar", "HOME=/h"}},
			wantOut: "bar|" + defaultPath + "|/h|\n"},
		{name: "given PATH", start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "echo $PATH"}, Env: []string{"PATH=/usr/bin:/bin"}}, wantOut: "/usr/bin:/bin\n"},
		{name: "working dir", start: &pb.ExecStart{Name: "pwd", WorkingDir: "/tmp"}, wantOut: "/tmp\n"},
		{name: "default working dir", start: &pb.ExecStart{Name: "pwd"}, wantOut: "/\n"},
		{name: "stdin is /dev/null", start: &pb.ExecStart{Name: "cat"}},
		{name: "not found", start: &pb.ExecStart{Name: "no-such-program"}, notStarted: true, wantCode: 127,
			wantErrOut: "boxlite: exec: \"no-such-program\": executable file not found in $PATH\n"},
		{name: "absolute not found", start: &pb.ExecStart{Name: "/no/such/program"}, notStarted: true, wantCode: 127,
			wantErrOut: "boxlite: exec: \"/no/such/program\": no such file or directory\n"},
		{name: "not executable", start: &pb.ExecStart{Name: "notexec", Env: []string{"PATH=" + noExec}}, notStarted: true, wantCode: 126,
			wantErrOut: "boxlite: exec: \"notexec\": permission denied\n"},
		{name: "absolute not executable", start: &pb.ExecStart{Name: filepath.Join(noExec, "notexec")}, notStarted: true, wantCode: 126,
			wantErrOut: fmt.Sprintf("boxlite: exec: %q: permission denied\n", filepath.Join(noExec, "notexec"))},
		{name: "killed by signal", start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "kill -USR1 $$"}}, wantCode: 128 + 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runExec(testContext(t), t, client, tt.start)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.started == tt.notStarted {
				t.Errorf("started = %v", r.started)
			}
			if r.exit == nil {
				t.Fatal("no exit message")
			}
			if r.stdout != tt.wantOut || r.stderr != tt.wantErrOut || r.exit.GetExitCode() != tt.wantCode {
				t.Fatalf("got stdout %q stderr %q exit %v; want %q %q %d", r.stdout, r.stderr, r.exit, tt.wantOut, tt.wantErrOut, tt.wantCode)
			}
			if wantSig := max(0, tt.wantCode-128); r.exit.GetSignal() != wantSig || r.exit.GetTimedOut() {
				t.Fatalf("exit %v: want signal %d, not timed out", r.exit, wantSig)
			}
		})
	}
}

func TestExecErrors(t *testing.T) {
	client := startServer(t, Config{})
	tests := []struct {
		name     string
		first    *pb.ExecInput
		wantCode codes.Code
		wantMsg  string
	}{
		{"first not start", &pb.ExecInput{Msg: &pb.ExecInput_Stdin{Stdin: []byte("x")}}, codes.InvalidArgument, "first message must be start"},
		{"empty name", &pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{}}}, codes.InvalidArgument, "empty program name"},
		{"missing working dir", &pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "true", WorkingDir: "/no/such/dir"}}},
			codes.NotFound, `working directory "/no/such/dir" not found`},
		{"working dir is a file", &pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "true", WorkingDir: "/etc/passwd"}}},
			codes.NotFound, `working directory "/etc/passwd" not found`},
		{"relative working dir", &pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "true", WorkingDir: "tmp"}}},
			codes.InvalidArgument, "not absolute"},
		{"unknown user", &pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "true", User: "no-such-user-x"}}},
			codes.NotFound, `unknown user "no-such-user-x"`},
		{"unknown group", &pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "true", User: "0:no-such-group-x"}}},
			codes.NotFound, `unknown group "no-such-group-x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := client.Exec(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(tt.first)
			_, err = stream.Recv()
			if status.Code(err) != tt.wantCode || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Fatalf("err = %v; want %v containing %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestExecSetupError(t *testing.T) {
	client := startServer(t, Config{SetupError: errors.New("root device /dev/vda did not appear")})
	r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "true"})
	if status.Code(r.err) != codes.FailedPrecondition || !strings.Contains(r.err.Error(), "/dev/vda") {
		t.Fatalf("err = %v", r.err)
	}
}

func TestExecStdin(t *testing.T) {
	client := startServer(t, Config{})
	t.Run("close_stdin", func(t *testing.T) {
		stream, err := client.Exec(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "cat", Stdin: true}}})
		stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Stdin{Stdin: []byte("hello ")}})
		stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Stdin{Stdin: []byte("cat")}})
		stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_CloseStdin{CloseStdin: true}})
		// Stream stays open: close_stdin alone must end cat.
		r := collect(t, stream)
		if r.err != nil || r.stdout != "hello cat" || r.exit.GetExitCode() != 0 {
			t.Fatalf("got %+v", r)
		}
	})
	t.Run("half close", func(t *testing.T) {
		big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB, more than a pipe holds
		var inputs []*pb.ExecInput
		for i := 0; i < len(big); i += 50000 {
			inputs = append(inputs, &pb.ExecInput{Msg: &pb.ExecInput_Stdin{Stdin: []byte(big[i:min(i+50000, len(big))])}})
		}
		r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sh", Args: []string{"-c", "cat; echo; echo done >&2"}, Stdin: true}, inputs...)
		if r.err != nil || r.stdout != big+"\n" || r.stderr != "done\n" || r.exit.GetExitCode() != 0 {
			t.Fatalf("got %d bytes of stdout (want %d), stderr %q, exit %v, err %v", len(r.stdout), len(big)+1, r.stderr, r.exit, r.err)
		}
	})
	t.Run("process does not read stdin", func(t *testing.T) {
		inputs := []*pb.ExecInput{{Msg: &pb.ExecInput_Stdin{Stdin: make([]byte, 200<<10)}}}
		r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "true", Stdin: true}, inputs...)
		if r.err != nil || r.exit.GetExitCode() != 0 {
			t.Fatalf("got %+v", r)
		}
	})
}

func TestExecTimeout(t *testing.T) {
	client := startServer(t, Config{})
	tests := []struct {
		name     string
		start    *pb.ExecStart
		wantCode int32
	}{
		{"TERM", &pb.ExecStart{Name: "sleep", Args: []string{"100"}, TimeoutMs: 200}, 128 + 15},
		{"TERM ignored, then KILL", &pb.ExecStart{Name: "sh", Args: []string{"-c", `trap "" TERM; sleep 100; echo survived`}, TimeoutMs: 200, KillGraceMs: 300}, 128 + 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := runExec(testContext(t), t, client, tt.start)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			if r.exit.GetExitCode() != tt.wantCode || r.exit.GetSignal() != tt.wantCode-128 || !r.exit.GetTimedOut() {
				t.Fatalf("exit = %v, want code %d, timed out", r.exit, tt.wantCode)
			}
			if r.stdout != "" {
				t.Fatalf("stdout %q", r.stdout)
			}
		})
	}
}

func TestExecSignal(t *testing.T) {
	client := startServer(t, Config{})
	stream, err := client.Exec(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	// The signal goes to the whole group: the shell and its sleep.
	stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "echo ready; sleep 100; echo not killed"}}}})
	if m, err := stream.Recv(); err != nil || m.GetStarted() == nil {
		t.Fatalf("first message %v, %v", m, err)
	}
	if m, err := stream.Recv(); err != nil || string(m.GetStdout()) != "ready\n" {
		t.Fatalf("second message %v, %v", m, err)
	}
	stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Signal{Signal: int32(syscall.SIGTERM)}})
	r := collect(t, stream)
	if r.err != nil || r.exit.GetExitCode() != 143 || r.exit.GetSignal() != 15 || r.exit.GetTimedOut() || r.stdout != "" {
		t.Fatalf("got %+v exit %v", r, r.exit)
	}
}

func TestExecClientCancelKills(t *testing.T) {
	client := startServer(t, Config{})
	ctx, cancel := context.WithCancel(testContext(t))
	stream, err := client.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "sleep 100 & sleep 100"}}}})
	m, err := stream.Recv()
	if err != nil || m.GetStarted() == nil {
		t.Fatalf("first message %v, %v", m, err)
	}
	pgid := int(m.GetStarted().GetPid())
	time.Sleep(100 * time.Millisecond) // let the shell start its children
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			t.Fatal("process group still alive after the client went away")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecBackgroundChildHoldsOutput(t *testing.T) {
	client := startServer(t, Config{})
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			start := time.Now()
			r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sh", Args: []string{"-c", "sleep 30 & echo done"}, Tty: tty})
			if r.pid != 0 {
				t.Cleanup(func() { syscall.Kill(-int(r.pid), syscall.SIGKILL) })
			}
			if r.err != nil || r.exit.GetExitCode() != 0 || !strings.Contains(r.stdout, "done") {
				t.Fatalf("got %+v exit %v", r, r.exit)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("exec took %v: waited for the background child", d)
			}
		})
	}
}

func TestExecTTY(t *testing.T) {
	client := startServer(t, Config{})
	t.Run("size and env", func(t *testing.T) {
		r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sh", Args: []string{"-c", `stty size; test -t 0 && test -t 1 && test -t 2 && echo "tty $TERM"; echo err >&2`}, Tty: true, Rows: 33, Cols: 101})
		if r.err != nil || r.exit.GetExitCode() != 0 {
			t.Fatalf("got %+v exit %v", r, r.exit)
		}
		if r.stdout != "33 101\r\ntty xterm\r\nerr\r\n" || r.stderr != "" {
			t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
		}
	})
	t.Run("resize and input", func(t *testing.T) {
		stream, err := client.Exec(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Start{Start: &pb.ExecStart{Name: "sh", Args: []string{"-c", "stty -echo; echo ready; read line; stty size; echo got $line"}, Tty: true, Rows: 10, Cols: 20}}})
		var out strings.Builder
		for !strings.Contains(out.String(), "ready") {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv: %v (output %q)", err, out.String())
			}
			out.Write(m.GetStdout())
		}
		stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Resize{Resize: &pb.Resize{Rows: 40, Cols: 120}}})
		stream.Send(&pb.ExecInput{Msg: &pb.ExecInput_Stdin{Stdin: []byte("hello\n")}})
		r := collect(t, stream)
		if r.err != nil || r.exit.GetExitCode() != 0 || r.stdout != "40 120\r\ngot hello\r\n" {
			t.Fatalf("got %+v exit %v", r, r.exit)
		}
	})
	t.Run("close_stdin sends EOT", func(t *testing.T) {
		r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "cat", Tty: true},
			&pb.ExecInput{Msg: &pb.ExecInput_Stdin{Stdin: []byte("line\n")}},
			&pb.ExecInput{Msg: &pb.ExecInput_CloseStdin{CloseStdin: true}})
		if r.err != nil || r.exit.GetExitCode() != 0 || !strings.Contains(r.stdout, "line\r\n") {
			t.Fatalf("got %+v exit %v", r, r.exit)
		}
	})
}

func TestExecConcurrent(t *testing.T) {
	client := startServer(t, Config{})
	const n = 25
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sh", Args: []string{"-c", "sleep 0.1; echo $0; exit $(($0 % 5))", strconv.Itoa(i)}})
			if r.err != nil || r.stdout != strconv.Itoa(i)+"\n" || r.exit.GetExitCode() != int32(i%5) {
				errs <- fmt.Errorf("exec %d: %+v exit %v", i, r, r.exit)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestExecUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running as another user needs root (euid 0)")
	}
	client := startServer(t, Config{})
	tests := []struct {
		user, want string
	}{
		{"nobody", "65534 65534\n"},
		{"1234:5678", "1234 5678\n"},
		{"65534:0", "65534 0\n"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sh", Args: []string{"-c", "echo $(id -u) $(id -g)"}, User: tt.user})
			if r.err != nil || r.stdout != tt.want || r.exit.GetExitCode() != 0 {
				t.Fatalf("got %+v exit %v, want %q", r, r.exit, tt.want)
			}
		})
	}
}

// TestExecChroot runs processes in a tiny box root made of a static busybox,
// with an absolute /bin/sh symlink (resolved inside the root, not on the host).
func TestExecChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root (euid 0)")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs a static busybox on the host")
	}
	if out, _ := exec.Command("file", "-L", busybox).Output(); !strings.Contains(string(out), "statically linked") {
		t.Skip("needs a static busybox on the host")
	}
	root := t.TempDir()
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	makeTree(t, root, map[string]string{
		"bin/sh":     "l:/bin/busybox",
		"bin/id":     "l:busybox",
		"bin/pwd":    "l:/bin/busybox",
		"home/app":   "d",
		"etc/passwd": "f",
		"etc/group":  "f",
	})
	os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\napp:x:1000:\nextra:x:2000:app\n"), 0o644)

	client := startServer(t, Config{Root: root})
	r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sh", Args: []string{"-c", `echo "$(id -u):$(id -G) $HOME $(pwd)"; ls /home`}, User: "app", WorkingDir: "/home/app"})
	if r.err != nil || r.exit.GetExitCode() != 0 || r.stdout != "1000:1000 2000 /home/app /home/app\napp\n" {
		t.Fatalf("got %+v exit %v", r, r.exit)
	}
	r = runExec(testContext(t), t, client, &pb.ExecStart{Name: "id", Args: []string{"-u"}})
	if r.err != nil || r.stdout != "0\n" {
		t.Fatalf("default user: got %+v exit %v", r, r.exit)
	}
	r = runExec(testContext(t), t, client, &pb.ExecStart{Name: "stty"}) // on the host, not in the box
	if r.exit.GetExitCode() != 127 {
		t.Fatalf("host-only program: got %+v exit %v", r, r.exit)
	}
}

func TestSyncAndShutdown(t *testing.T) {
	ctx := testContext(t)
	client := startServer(t, Config{})
	if _, err := client.Sync(ctx, &pb.SyncRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Shutdown(ctx, &pb.ShutdownRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("Shutdown without PowerOff: %v", err)
	}
	got := make(chan bool, 2)
	client = startServer(t, Config{PowerOff: func(reboot bool) { got <- reboot }})
	if _, err := client.Shutdown(ctx, &pb.ShutdownRequest{Reboot: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case reboot := <-got:
		if !reboot {
			t.Fatal("PowerOff(false), want reboot")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PowerOff not called")
	}
}

func TestCredential(t *testing.T) {
	root := identity{uid: 0, gid: 0, groups: []int{0}}
	user := identity{uid: 1000, gid: 1000, groups: []int{1000, 27}}
	cases := []struct {
		name string
		u    execUser
		self identity
		want *syscall.Credential
	}{
		{"root as the agent is", execUser{UID: 0, GID: 0, Groups: []uint32{0}}, root, nil},
		{"root, groups in another order", execUser{UID: 0, GID: 0, Groups: []uint32{0}}, identity{groups: []int{0, 0}}, nil},
		{"root with more groups", execUser{UID: 0, GID: 0, Groups: []uint32{0, 10}}, root,
			&syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{0, 10}}},
		{"root, the agent has no groups", execUser{UID: 0, GID: 0, Groups: []uint32{0}}, identity{},
			&syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{0}}},
		{"nobody from root", execUser{UID: 65534, GID: 65534, Groups: []uint32{65534}}, root,
			&syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534}}},
		{"non-root agent, itself", execUser{UID: 1000, GID: 1000, Groups: []uint32{1000}}, user, nil},
		{"non-root agent, another user", execUser{UID: 1001, GID: 1000}, user,
			&syscall.Credential{Uid: 1001, Gid: 1000, NoSetGroups: true}},
	}
	for _, c := range cases {
		if got := credential(c.u, c.self); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: credential = %+v, want %+v", c.name, got, c.want)
		}
	}
}
