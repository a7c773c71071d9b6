package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestCLIVerbs runs the CLI scripts in testdata/*.txtar. Each script gets
// the boxlite binary (with the agent beside it) in PATH, a fresh home in
// BOXLITE_HOME, and the busybox root filesystem in $ROOTFS. Boxes are left
// in a script's home only when it fails; they are removed at cleanup.
func TestCLIVerbs(t *testing.T) {
	bin := buildCLI(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			home := filepath.Join(env.WorkDir, "home")
			env.Setenv("BOXLITE_HOME", home)
			env.Setenv("ROOTFS", rootfsPath)
			env.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+env.Getenv("PATH"))
			for _, k := range []string{"BOXLITE_KERNEL", "BOXLITE_ACCEL"} {
				if v := os.Getenv(k); v != "" {
					env.Setenv(k, v)
				}
			}
			env.Defer(func() { removeAllBoxes(bin, home) })
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status": cmdStatus,
			"json":   cmdJSON,
		},
	})
}

// removeAllBoxes kills whatever boxes a failed script left running.
func removeAllBoxes(bin, home string) {
	out, _ := exec.Command(bin, "--home", home, "ps", "-a", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command(bin, "--home", home, "rm", "-f", id).Run()
	}
}

// cmdStatus runs a program and checks its exit code:
//
//	status CODE PROGRAM [ARG...]
//
// Its stdout and stderr are kept for the commands that follow.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status CODE PROGRAM [ARG...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: bad code %q", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("status: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d; stderr:\n%s", got, want, ts.ReadFile("stderr"))
	}
}

// cmdJSON checks that a file is JSON: one array of objects with "ID"
// keys, or one such object per line.
//
//	json array|lines FILE COUNT
func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: json array|lines FILE COUNT")
	}
	data := ts.ReadFile(args[1])
	want, _ := strconv.Atoi(args[2])
	var objs []map[string]any
	switch args[0] {
	case "array":
		ts.Check(json.Unmarshal([]byte(data), &objs))
	case "lines":
		dec := json.NewDecoder(strings.NewReader(data))
		for dec.More() {
			var o map[string]any
			ts.Check(dec.Decode(&o))
			objs = append(objs, o)
		}
	default:
		ts.Fatalf("json: want array or lines")
	}
	if len(objs) != want {
		ts.Fatalf("json: %d objects, want %d", len(objs), want)
	}
	for _, o := range objs {
		if id, _ := o["ID"].(string); id == "" {
			ts.Fatalf("json: object without ID: %v", o)
		}
	}
}

// TestCLIRunTTY drives `run -it` through a real pseudo-terminal: the
// shell's arithmetic comes back and its exit status is boxlite's.
func TestCLIRunTTY(t *testing.T) {
	bin := buildCLI(t)
	cmd := exec.Command(bin, "--home", newHome(t), "run", "-it", "--rm", "--rootfs", rootfsPath, "sh")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	output := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			buf.Write(b[:n])
			if err != nil {
				output <- buf.Bytes()
				return
			}
		}
	}()
	if _, err := f.Write([]byte("echo $((6*7)); exit 3\n")); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("run -it did not end")
	}
	f.Close()
	out := <-output
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("run -it: %v, want exit status 3; output:\n%s", err, out)
	}
	// The echo of the typed line contains "6*7"; the answer is on a line
	// of its own.
	if !bytes.Contains(out, []byte("\n42\r\n")) && !bytes.Contains(out, []byte("\r\n42\r\n")) {
		t.Fatalf("no 42 in the output:\n%q", out)
	}
}
