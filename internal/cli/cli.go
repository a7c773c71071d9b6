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
	home     string
	insecure []string
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
	root.PersistentFlags().StringArrayVar(&g.insecure, "insecure-registry", nil, "registry host[:port] reached over plain HTTP (repeatable); tried first for unqualified names")
	root.AddCommand(newRunCmd(g), newPullCmd(g), newImagesCmd(g), newRmiCmd(g))
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
	opts := boxlite.Options{HomeDir: g.home}
	for _, h := range g.insecure {
		opts.ImageRegistries = append(opts.ImageRegistries, boxlite.Registry{Host: h, Insecure: true})
	}
	if len(opts.ImageRegistries) > 0 {
		opts.ImageRegistries = append(opts.ImageRegistries, boxlite.Registry{Host: "docker.io"})
	}
	return boxlite.NewRuntime(opts)
}

func stdinIsTerminal(r io.Reader) (*os.File, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return nil, false
	}
	return f, isTerminal(f)
}
