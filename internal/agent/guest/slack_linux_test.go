package guest

import (
	"os"
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
	if os.Geteuid() != 0 {
		t.Skip("setting another thread's timer slack needs CAP_SYS_NICE (the agent runs as root)")
	}
	if inChild(t, slackHelperEnv) {
		timerSlackHelper(t)
	}
}

func timerSlackHelper(t *testing.T) {
	if err := raiseTimerSlack(); err != nil {
		t.Fatal(err)
	}
	checkThreadSlack(t, "after raiseTimerSlack")

	client := startServer(t, Config{})
	for range 5 { // whichever thread forks
		r := runExec(testContext(t), t, client, &pb.ExecStart{Name: "cat", Args: []string{"/proc/self/timerslack_ns"}})
		if want := strconv.FormatInt(childTimerSlack.Nanoseconds(), 10) + "\n"; r.err != nil || r.stdout != want {
			t.Fatalf("child's slack: %q (%v), want %q", r.stdout, r.err, want)
		}
	}
	// The threads that forked have the agent's slack back.
	checkThreadSlack(t, "after five execs")
}

// checkThreadSlack fails unless every thread has agentTimerSlack.
func checkThreadSlack(t *testing.T, when string) {
	t.Helper()
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
			t.Errorf("%s: thread %s: slack %s, want %s", when, task.Name(), got, want)
		}
	}
}
