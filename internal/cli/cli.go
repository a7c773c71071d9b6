package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/boxlite-go/boxlite"
)

// Exit codes, as docker uses them. Any other code is the command's own.
const (
	ExitRuntimeError = 125 // the runtime failed; the command did not run
	ExitCannotExec   = 126 // the command could not be executed
	ExitNotFound     = 127 // the command was not found
)

// exitCodes maps the API's sentinel errors to exit codes; the first match
// wins and an error matching none is a runtime error. A command's own exit
// status (126 and 127 included, which the guest agent reports as exit
// statuses) is passed through by exitError instead.
var exitCodes = []struct {
	err  error
	code int
}{
	{boxlite.ErrUnknownUser, ExitCannotExec},
	{boxlite.ErrNotFound, ExitRuntimeError},
	{boxlite.ErrAlreadyExists, ExitRuntimeError},
	{boxlite.ErrInvalidArgument, ExitRuntimeError},
	{boxlite.ErrInvalidState, ExitRuntimeError},
	{boxlite.ErrMissingDependency, ExitRuntimeError},
	{boxlite.ErrImage, ExitRuntimeError},
	{boxlite.ErrGuestPanic, ExitRuntimeError},
	{boxlite.ErrBoxDown, ExitRuntimeError},
	{boxlite.ErrProtocol, ExitRuntimeError},
}

// exitCode is the process exit code for an error a command returned.
func exitCode(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	for _, e := range exitCodes {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return ExitRuntimeError
}

// exitError carries a process exit code out of a command; its message has
// been printed already (or there is none, for a command's own status).
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
		Long: "Boxes live in the home directory and are shared by every boxlite process on it.\n" +
			"Boxes made by create and run -d are detached: once started they keep running\n" +
			"after the boxlite process exits, until stop or rm -f.",
	}
	root.PersistentFlags().StringVar(&g.home, "home", "", "runtime home directory (default $BOXLITE_HOME or ~/.boxlite)")
	root.PersistentFlags().StringArrayVar(&g.insecure, "insecure-registry", nil, "registry host[:port] reached over plain HTTP (repeatable); tried first for unqualified names")
	root.AddCommand(
		newRunCmd(g), newCreateCmd(g), newStartCmd(g), newStopCmd(g), newRestartCmd(g),
		newExecCmd(g), newPsCmd(g), newRmCmd(g), newInspectCmd(g), newLogsCmd(g), newWaitCmd(g),
		newPullCmd(g), newImagesCmd(g), newRmiCmd(g), newImageCmd(g),
		newCloneCmd(g), newExportCmd(g), newImportCmd(g),
	)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if !errors.As(err, new(exitError)) {
		fmt.Fprintln(stderr, "boxlite:", oneLine(err))
	}
	return exitCode(err)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
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

// withRuntime opens the runtime, runs fn, and shuts the runtime down;
// detached boxes keep running.
func (g *globals) withRuntime(fn func(rt *boxlite.Runtime) error) error {
	rt, err := g.runtime()
	if err != nil {
		return err
	}
	defer rt.Shutdown(context.WithoutCancel(context.Background()))
	return fn(rt)
}

// forEach applies fn to every box argument, reporting each failure on
// stderr, and fails with the exit code of the first failure.
func forEach(cmd *cobra.Command, refs []string, fn func(ref string) error) error {
	code := 0
	for _, ref := range refs {
		if err := fn(ref); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "boxlite:", oneLine(err))
			if code == 0 {
				code = exitCode(err)
			}
			continue
		}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

func stdinIsTerminal(r io.Reader) (*os.File, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return nil, false
	}
	return f, isTerminal(f)
}
