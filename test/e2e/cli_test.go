package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildCLI builds cmd/boxlite next to the agent so the CLI finds it.
func buildCLI(t *testing.T) string {
	t.Helper()
	requireVM(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "boxlite")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/boxlite")
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build cli: %v: %s", err, out)
	}
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "boxlite-agent"), agent, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestCLIRun(t *testing.T) {
	bin := buildCLI(t)
	home := newHome(t)
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"output and exit code", []string{"--rootfs", rootfsPath, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"}, "", 3, "hi\n", "oops\n"},
		{"env workdir user", []string{"--rootfs", rootfsPath, "-e", "A=b", "-w", "/tmp", "-u", "nobody", "--", "sh", "-c", "echo $A $(pwd) $(id -u)"}, "", 0, "b /tmp 65534\n", ""},
		{"stdin", []string{"-i", "--rootfs", rootfsPath, "--", "wc", "-c"}, "12345", 0, "5\n", ""},
		{"missing program", []string{"--rootfs", rootfsPath, "--", "nope"}, "", 127, "", "nope"},
		{"missing rootfs", []string{"--rootfs", "/no/such/dir", "--", "true"}, "", 125, "", "not found"},
		{"no command", []string{"--rootfs", rootfsPath}, "", 125, "", "no command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"--home", home, "run", "--rm"}, tc.args...)...)
			cmd.Stdin = strings.NewReader(tc.stdin)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || out.String() != tc.wantStdout || !strings.Contains(errb.String(), tc.wantStderr) {
				t.Fatalf("exit %d stdout %q stderr %q; want %d %q %q", code, out.String(), errb.String(), tc.wantCode, tc.wantStdout, tc.wantStderr)
			}
		})
	}
	entries, _ := os.ReadDir(filepath.Join(home, "boxes"))
	if len(entries) != 0 {
		t.Fatalf("run left %d boxes behind", len(entries))
	}
}
