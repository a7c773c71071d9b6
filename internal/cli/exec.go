package cli

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/boxlite-go/boxlite"
)

func newExecCmd(g *globals) *cobra.Command {
	var (
		s       stdio
		env     []string
		workdir string
		user    string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] BOX [--] COMMAND [ARG...]",
		Short: "Run a command in a running box",
		Long: "Exec runs COMMAND in a running box, which another boxlite process may have\n" +
			"started, and exits with its exit code: 127 when it is not found, 126 when it\n" +
			"cannot be executed, 125 when the runtime fails.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				box, err := rt.Get(ctx, args[0])
				if err != nil {
					return err
				}
				command := dropDash(args[1:])
				if len(command) == 0 {
					return fmt.Errorf("give a COMMAND after the box: %w", boxlite.ErrInvalidArgument)
				}
				c := boxlite.Command{Name: command[0], Args: command[1:], Env: env, WorkingDir: workdir, User: user, Timeout: timeout}
				return s.exec(ctx, cmd, box, c)
			})
		},
	}
	cmd.Flags().SetInterspersed(false)
	fl := cmd.Flags()
	s.register(fl)
	fl.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	fl.StringVarP(&workdir, "workdir", "w", "", "working directory inside the box")
	fl.StringVarP(&user, "user", "u", "", "user (name|uid[:group|gid])")
	fl.DurationVar(&timeout, "timeout", 0, "kill the command after this long")
	return cmd
}
