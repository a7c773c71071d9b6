package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

const slackHelperEnv = "BOXLITE_TEST_TIMER_SLACK"

// TestTimerSlack checks that raiseTimerSlack reaches every thread and that
// processes the server starts get the usual slack back. It runs in a child
// test process, whose threads it may change.
func TestTimerSlack(t *testing.T) {
	if os.Getenv(slackHelperEnv) == "1" {
		timerSlackHelper(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("setting another thread's timer slack needs CAP_SYS_NICE (the agent runs as root)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTimerSlack$", "-test.v")
	cmd.Env = append(os.Environ(), slackHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestTimerSlack") {
		t.Fatalf("helper failed: %v\n%s", err, out)
	}
}

func timerSlackHelper(t *testing.T) {
	if err := raiseTimerSlack(); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.FormatInt(agentTimerSlack.Nanoseconds(), 10)
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", task.Name(), "timerslack_ns"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("thread %s: slack %s, want %s", task.Name(), got, want)
		}
	}

	client := startServer(t, Config{})
	for range 5 { // whichever thread forks
		r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "cat", Args: []string{"/proc/self/timerslack_ns"}})
		if want := strconv.FormatInt(childTimerSlack.Nanoseconds(), 10) + "\n"; r.err != nil || r.stdout != want {
			t.Fatalf("child's slack: %q (%v), want %q", r.stdout, r.err, want)
		}
	}
}
