package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite"
)

type result struct {
	stdout, stderr string
	res            boxlite.ExecResult
}

// run executes cmd in box, collecting both streams.
func run(t *testing.T, box *boxlite.Box, cmd boxlite.Command) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ex, err := box.Exec(ctx, cmd)
	if err != nil {
		t.Fatalf("exec %s %q: %v", cmd.Name, cmd.Args, err)
	}
	var out, errb bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&out, ex.Stdout()) }()
	go func() { defer wg.Done(); io.Copy(&errb, ex.Stderr()) }()
	res, err := ex.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %s %q: %v", cmd.Name, cmd.Args, err)
	}
	wg.Wait()
	return result{out.String(), errb.String(), res}
}

func sh(script string) boxlite.Command {
	return boxlite.Command{Name: "sh", Args: []string{"-c", script}}
}

func TestEcho(t *testing.T) {
	box := sharedBox(t)
	r := run(t, box, boxlite.Command{Name: "echo", Args: []string{"hello", "box"}})
	if r.stdout != "hello box\n" || r.stderr != "" || r.res.ExitCode != 0 {
		t.Fatalf("got %+v", r)
	}
}

func TestExitCodes(t *testing.T) {
	box := sharedBox(t)
	for _, tc := range []struct {
		name string
		cmd  boxlite.Command
		want int
	}{
		{"zero", sh("exit 0"), 0},
		{"one", boxlite.Command{Name: "false"}, 1},
		{"seven", sh("exit 7"), 7},
		{"shell 127", sh("exit 127"), 127},
		{"missing program", boxlite.Command{Name: "no-such-program"}, 127},
		{"not executable", boxlite.Command{Name: "/etc/passwd"}, 126},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, box, tc.cmd)
			if r.res.ExitCode != tc.want {
				t.Fatalf("exit code %d, want %d (stderr %q)", r.res.ExitCode, tc.want, r.stderr)
			}
			if tc.name == "missing program" && !strings.Contains(r.stderr, "no-such-program") {
				t.Fatalf("stderr %q does not name the program", r.stderr)
			}
		})
	}
}

func TestStderrApart(t *testing.T) {
	box := sharedBox(t)
	r := run(t, box, sh("echo out; echo err >&2; echo out2"))
	if r.stdout != "out\nout2\n" || r.stderr != "err\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
}

func TestStdinToCat(t *testing.T) {
	box := sharedBox(t)
	in := strings.Repeat("line of input\n", 5000) // 70 KB: several chunks
	r := run(t, box, boxlite.Command{Name: "cat", Stdin: strings.NewReader(in)})
	if r.stdout != in {
		t.Fatalf("cat echoed %d bytes, want %d", len(r.stdout), len(in))
	}
	// EOF reaches the process: wc sees the whole input and ends.
	r = run(t, box, boxlite.Command{Name: "wc", Args: []string{"-l"}, Stdin: strings.NewReader("a\nb\nc\n")})
	if strings.TrimSpace(r.stdout) != "3" {
		t.Fatalf("wc -l: %q", r.stdout)
	}
	// No stdin: the process reads EOF at once.
	r = run(t, box, boxlite.Command{Name: "cat"})
	if r.stdout != "" || r.res.ExitCode != 0 {
		t.Fatalf("cat without stdin: %+v", r)
	}
}

func TestEnvAndWorkdir(t *testing.T) {
	box := sharedBox(t)
	r := run(t, box, boxlite.Command{
		Name:       "sh",
		Args:       []string{"-c", `echo "$BOX_LEVEL $CMD_LEVEL $(pwd)"`},
		Env:        []string{"CMD_LEVEL=cmd"},
		WorkingDir: "/etc",
	})
	if r.stdout != "box cmd /etc\n" {
		t.Fatalf("got %q", r.stdout)
	}
	r = run(t, box, boxlite.Command{Name: "sh", Args: []string{"-c", `echo "$BOX_LEVEL"`}, Env: []string{"BOX_LEVEL=override"}})
	if r.stdout != "override\n" {
		t.Fatalf("command env does not override box env: %q", r.stdout)
	}
	r = run(t, box, sh(`echo "$PATH"; echo "$HOME"; hostname`))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "/bin") || lines[1] != "/root" || lines[2] != "shared" {
		t.Fatalf("default env/hostname: %q", r.stdout)
	}
}

func TestUser(t *testing.T) {
	box := sharedBox(t)
	for _, tc := range []struct{ user, want string }{
		{"", "0 0"},
		{"nobody", "65534 65534"},
		{"user", "1000 1000"},
		{"1000:100", "1000 100"},
		{"4242", "4242 0"},
	} {
		r := run(t, box, boxlite.Command{Name: "sh", Args: []string{"-c", "echo $(id -u) $(id -g)"}, User: tc.user})
		if got := strings.TrimSpace(r.stdout); got != tc.want {
			t.Errorf("user %q: id %q, want %q", tc.user, got, tc.want)
		}
	}
	r := run(t, box, boxlite.Command{Name: "sh", Args: []string{"-c", "echo $HOME; id -Gn"}, User: "user"})
	if !strings.HasPrefix(r.stdout, "/home/user\n") || !strings.Contains(r.stdout, "users") {
		t.Errorf("user home/groups: %q", r.stdout)
	}

	// The agent keeps parsed account files: a user added just now must
	// still be found by the very next exec.
	run(t, box, sh(`echo 'late:x:4321:4321:late:/home/late:/bin/sh' >> /etc/passwd`))
	r = run(t, box, boxlite.Command{Name: "sh", Args: []string{"-c", "echo $(id -u) $HOME"}, User: "late"})
	if got := strings.TrimSpace(r.stdout); got != "4321 /home/late" {
		t.Errorf("user added just before the exec: %q (stderr %q)", got, r.stderr)
	}
}

// TestTimerSlack checks that the agent runs with its raised timer slack
// but the processes it starts get the kernel's usual 50 µs, and that the
// agent's threads that forked them have the agent's slack back.
func TestTimerSlack(t *testing.T) {
	box := sharedBox(t)
	for range 5 {
		run(t, box, boxlite.Command{Name: "true"})
	}
	r := run(t, box, sh(`cat /proc/self/timerslack_ns; for t in /proc/1/task/*; do cat /proc/${t##*/}/timerslack_ns; done`))
	got := strings.Fields(r.stdout)
	if len(got) < 2 || got[0] != "50000" {
		t.Fatalf("timer slack of a box process, then of the agent's threads: %q (stderr %q)", r.stdout, r.stderr)
	}
	for _, s := range got[1:] {
		if s != "4000000" {
			t.Fatalf("timer slack of the agent's threads: %q, want 4000000 each", got[1:])
		}
	}
}

// TestDiskReadAhead checks the box disk's read-ahead, raised from the
// kernel's 128 KiB default: each request costs a trip through the VMM.
func TestDiskReadAhead(t *testing.T) {
	box := sharedBox(t)
	r := run(t, box, sh(`cat /sys/block/vda/queue/read_ahead_kb`))
	if got := strings.TrimSpace(r.stdout); got != "1024" {
		t.Fatalf("read_ahead_kb of the box disk = %q (stderr %q), want 1024", got, r.stderr)
	}
}

func TestBadCommands(t *testing.T) {
	box := sharedBox(t)
	ctx := context.Background()
	if _, err := box.Exec(ctx, boxlite.Command{Name: "id", User: "no-such-user"}); !errors.Is(err, boxlite.ErrUnknownUser) {
		t.Errorf("unknown user: %v, want ErrUnknownUser", err)
	}
	if _, err := box.Exec(ctx, boxlite.Command{}); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Errorf("empty command: %v, want ErrInvalidArgument", err)
	}
	if _, err := box.Exec(ctx, boxlite.Command{Name: "ls", WorkingDir: "/no/such/dir"}); !errors.Is(err, boxlite.ErrNotFound) {
		t.Errorf("missing workdir: %v, want ErrNotFound", err)
	}
	if _, err := box.Exec(ctx, boxlite.Command{Name: "env", Env: []string{"NOEQUALS"}}); !errors.Is(err, boxlite.ErrInvalidArgument) {
		t.Errorf("bad env: %v, want ErrInvalidArgument", err)
	}
}

func TestTimeoutKills(t *testing.T) {
	box := sharedBox(t)
	start := time.Now()
	r := run(t, box, boxlite.Command{Name: "sleep", Args: []string{"100"}, Timeout: time.Second})
	if !r.res.TimedOut || r.res.Signal != int(syscall.SIGTERM) || r.res.ExitCode != 128+int(syscall.SIGTERM) {
		t.Fatalf("got %+v, want timed out by SIGTERM", r.res)
	}
	// A process that ignores TERM is killed after the grace period.
	r = run(t, box, boxlite.Command{Name: "sh", Args: []string{"-c", "trap '' TERM; sleep 100"},
		Timeout: time.Second, KillGrace: 500 * time.Millisecond})
	if !r.res.TimedOut || r.res.Signal != int(syscall.SIGKILL) {
		t.Fatalf("TERM-ignoring process: %+v, want killed by SIGKILL", r.res)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Fatalf("timeouts took %s", d)
	}
}

func TestSignal(t *testing.T) {
	box := sharedBox(t)
	ctx := context.Background()
	ex, err := box.Exec(ctx, boxlite.Command{Name: "sleep", Args: []string{"100"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.Signal(ctx, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	res, err := ex.Wait(ctx)
	if err != nil || res.Signal != int(syscall.SIGINT) || res.ExitCode != 130 || res.TimedOut {
		t.Fatalf("got %+v %v, want death by SIGINT", res, err)
	}
}

func TestTTY(t *testing.T) {
	box := sharedBox(t)
	ctx := context.Background()
	ex, err := box.Exec(ctx, boxlite.Command{
		Name: "sh", Args: []string{"-c", "stty size; read line; stty size; test -t 0 && echo tty"},
		TTY: true, Rows: 30, Cols: 100, Stdin: &slowReader{wait: 2 * time.Second, data: "go\n"},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		ex.ResizeTTY(ctx, 40, 120)
	}()
	out, _ := io.ReadAll(ex.Stdout())
	res, err := ex.Wait(ctx)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("wait: %+v %v (output %q)", res, err, out)
	}
	s := strings.ReplaceAll(string(out), "\r", "")
	if !strings.Contains(s, "30 100\n") || !strings.Contains(s, "40 120\n") || !strings.Contains(s, "tty\n") {
		t.Fatalf("tty output %q", s)
	}
}

// slowReader yields data after a delay, then EOF.
type slowReader struct {
	wait time.Duration
	data string
	done bool
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	time.Sleep(r.wait)
	r.done = true
	return copy(p, r.data), nil
}

func TestConcurrentExecs(t *testing.T) {
	box := sharedBox(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			ex, err := box.Exec(ctx, boxlite.Command{Name: "sh", Args: []string{"-c", fmt.Sprintf("sleep 0.5; echo out-%d; echo err-%d >&2; exit %d", i, i, i%5)}})
			if err != nil {
				errs <- err
				return
			}
			out, _ := io.ReadAll(ex.Stdout())
			serr, _ := io.ReadAll(ex.Stderr())
			res, err := ex.Wait(ctx)
			switch {
			case err != nil:
				errs <- err
			case string(out) != fmt.Sprintf("out-%d\n", i) || string(serr) != fmt.Sprintf("err-%d\n", i) || res.ExitCode != i%5:
				errs <- fmt.Errorf("exec %d: out %q err %q code %d", i, out, serr, res.ExitCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestWaitWithoutReading: Wait returns even though nobody reads a large
// output.
func TestWaitWithoutReading(t *testing.T) {
	box := sharedBox(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ex, err := box.Exec(ctx, sh("head -c 3000000 /dev/zero; head -c 1000000 /dev/zero >&2"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Wait(ctx)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("wait: %+v %v", res, err)
	}
	n, _ := io.Copy(io.Discard, ex.Stdout())
	m, _ := io.Copy(io.Discard, ex.Stderr())
	if n != 3000000 || m != 1000000 {
		t.Fatalf("read %d/%d bytes after exit", n, m)
	}
}

// TestUnreadOutputSpills: 40 MB of output nobody reads until the process
// has ended arrives whole, in order, and the host keeps at most 8 MiB of
// it in memory (the rest waits in an unlinked temporary file).
func TestUnreadOutputSpills(t *testing.T) {
	box := sharedBox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ex, err := box.Exec(ctx, sh("i=0; while [ $i -lt 40 ]; do head -c 1000000 /dev/zero | tr '\\0' \"$((i % 10))\"; i=$((i+1)); done"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Wait(ctx)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("wait: %+v %v", res, err)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 24<<20 {
		t.Errorf("heap grew by %d MB holding unread output", grown>>20)
	}
	buf := make([]byte, 1000000)
	for i := range 40 {
		if _, err := io.ReadFull(ex.Stdout(), buf); err != nil {
			t.Fatalf("megabyte %d: %v", i, err)
		}
		want := byte('0' + i%10)
		if buf[0] != want || buf[len(buf)-1] != want {
			t.Fatalf("megabyte %d holds %q..%q, want %q", i, buf[0], buf[len(buf)-1], want)
		}
	}
	if n, _ := io.Copy(io.Discard, ex.Stdout()); n != 0 {
		t.Fatalf("%d bytes more than written", n)
	}
}

func openFDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

func TestSequentialExecsNoLeak(t *testing.T) {
	box := sharedBox(t)
	run(t, box, boxlite.Command{Name: "true"}) // warm up connections
	time.Sleep(100 * time.Millisecond)
	g0, f0 := runtime.NumGoroutine(), openFDs()
	for i := range 200 {
		r := run(t, box, boxlite.Command{Name: "echo", Args: []string{fmt.Sprint(i)}})
		if r.stdout != fmt.Sprintf("%d\n", i) {
			t.Fatalf("exec %d: %q", i, r.stdout)
		}
	}
	// Let finished streams' goroutines exit.
	var g1, f1 int
	for range 50 {
		time.Sleep(50 * time.Millisecond)
		g1, f1 = runtime.NumGoroutine(), openFDs()
		if g1 <= g0+2 && f1 <= f0+2 {
			break
		}
	}
	if g1 > g0+2 || f1 > f0+2 {
		t.Fatalf("after 200 execs: goroutines %d -> %d, fds %d -> %d", g0, g1, f0, f1)
	}
}
