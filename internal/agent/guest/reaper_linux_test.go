package guest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

const reaperHelperEnv = "BOXLITE_TEST_INIT_REAPER"

// TestInitReaper exercises the PID 1 reaper (wait4(-1)) in a child test
// process made a child subreaper, so orphans are reparented to it as they
// would be to init — without stealing children from this test process.
func TestInitReaper(t *testing.T) {
	if inChild(t, reaperHelperEnv) {
		initReaperHelper(t)
	}
}

// inChild runs the calling test again in a child test process, with env
// set to "1" there, and fails if it fails. It reports whether the caller
// is that child, which then does the test's work.
func inChild(t *testing.T, env string) bool {
	t.Helper()
	if os.Getenv(env) == "1" {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("child test process failed: %v\n%s", err, out)
	}
	return false
}

func initReaperHelper(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	client := startServer(t, Config{ReapAll: true})
	const n = 25
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The subshell's sleep becomes an orphan, reparented to us.
			script := "(sleep 0.2 >/dev/null 2>&1 &); echo $0; exit $(($0 % 7))"
			if i%2 == 1 {
				script = "echo $0; exit $(($0 % 7))" // exits at once
			}
			r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sh", Args: []string{"-c", script, strconv.Itoa(i)}})
			if r.err != nil || r.stdout != strconv.Itoa(i)+"\n" || r.exit.GetExitCode() != int32(i%7) {
				t.Errorf("exec %d: %+v exit %v", i, r, r.exit)
			}
		}()
	}
	wg.Wait()
	// A timeout still works under the global reaper.
	r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "sleep", Args: []string{"100"}, TimeoutMs: 100})
	if r.exit.GetExitCode() != 143 || !r.exit.GetTimedOut() {
		t.Errorf("timeout: %+v exit %v", r, r.exit)
	}
	// Every orphan is reaped: no children (zombie or not) are left.
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids := children(t)
		if len(kids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("children left: %v", kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// children lists the pids and states of this process's children.
func children(t *testing.T) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := strconv.Itoa(os.Getpid())
	var kids []string
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == me {
			kids = append(kids, fmt.Sprintf("%s:%s", e.Name(), f[0]))
		}
	}
	return kids
}
