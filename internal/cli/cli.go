package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/boxlite-go/boxlite"
)

// Exit codes, as docker uses them.
const (
	ExitRuntimeError = 125 // the runtime failed; the command did not run
	ExitCannotExec   = 126
	ExitNotFound     = 127
)

// exitError carries a process exit code out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

type globals struct {
	home string
}

// Main runs the CLI with args (without the program name) and returns the
// process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{}
	root := &cobra.Command{
		Use:           "boxlite",
		Short:         "Run commands in hardware-isolated micro-VMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.home, "home", "", "runtime home directory (default $BOXLITE_HOME or ~/.boxlite)")
	root.AddCommand(newRunCmd(g))
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(stderr, "boxlite:", err)
	return ExitRuntimeError
}

func (g *globals) runtime() (*boxlite.Runtime, error) {
	return boxlite.NewRuntime(boxlite.Options{HomeDir: g.home})
}

func stdinIsTerminal(r io.Reader) (*os.File, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return nil, false
	}
	return f, isTerminal(f)
}
