package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/boxlite-go/boxlite"
)

type runFlags struct {
	rootfs      string
	env         []string
	workdir     string
	user        string
	cpus        int
	memory      int
	interactive bool
	tty         bool
	timeout     time.Duration
}

func newRunCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run [flags] (--rootfs DIR | IMAGE) [--] [COMMAND [ARG...]]",
		Short: "Run a command in a new box",
		Long: "Run boots a new box from an OCI image or a root filesystem (a directory or an\n" +
			"ext4 image), runs COMMAND in it (for an image: its entrypoint with COMMAND as\n" +
			"arguments, or its default command), prints its output, removes the box, and\n" +
			"exits with the command's exit code (125 when the runtime fails).",
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(cmd, g, args)
		},
	}
	cmd.Flags().SetInterspersed(false)
	fl := cmd.Flags()
	fl.StringVar(&f.rootfs, "rootfs", "", "root filesystem: a directory or an ext4 image")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the box")
	fl.StringVarP(&f.user, "user", "u", "", "user (name|uid[:group|gid])")
	fl.IntVar(&f.cpus, "cpus", 0, "virtual CPUs (default 1)")
	fl.IntVarP(&f.memory, "memory", "m", 0, "memory in MiB (default 512)")
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "keep stdin open and pass it to the command")
	fl.BoolVarP(&f.tty, "tty", "t", false, "allocate a terminal")
	fl.DurationVar(&f.timeout, "timeout", 0, "kill the command after this long")
	return cmd
}

func (f *runFlags) run(cmd *cobra.Command, g *globals, args []string) error {
	opts := boxlite.BoxOptions{
		Rootfs:    f.rootfs,
		CPUs:      f.cpus,
		MemoryMiB: f.memory,
	}
	if f.rootfs == "" {
		if len(args) == 0 {
			return fmt.Errorf("give an IMAGE or --rootfs DIR, then a command: %w", boxlite.ErrInvalidArgument)
		}
		opts.Image, args = args[0], args[1:]
	} else if len(args) == 0 {
		return fmt.Errorf("no command given: %w", boxlite.ErrInvalidArgument)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rt, err := g.runtime()
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rt.Shutdown(sctx)
	}()
	box, err := rt.Create(ctx, opts, "")
	if err != nil {
		return err
	}
	defer rt.Remove(context.Background(), box.ID(), true)
	if err := box.Start(ctx); err != nil {
		return err
	}

	c, err := box.Command(args...)
	if err != nil {
		return err
	}
	c.Env, c.WorkingDir, c.User, c.TTY, c.Timeout = f.env, f.workdir, f.user, f.tty, f.timeout
	in := cmd.InOrStdin()
	if f.interactive {
		c.Stdin = in
	}
	var restore func()
	termFile, isTerm := stdinIsTerminal(in)
	if f.tty && isTerm {
		if rows, cols, err := termSize(termFile); err == nil {
			c.Rows, c.Cols = rows, cols
		}
		if state, err := term.MakeRaw(int(termFile.Fd())); err == nil {
			restore = func() { _ = term.Restore(int(termFile.Fd()), state) }
			defer restore()
		}
	}
	ex, err := box.Exec(ctx, c)
	if err != nil {
		return err
	}
	if f.tty && isTerm {
		go forwardResize(ctx, termFile, ex)
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(cmd.OutOrStdout(), ex.Stdout()); done <- struct{}{} }()
	go func() { io.Copy(cmd.ErrOrStderr(), ex.Stderr()); done <- struct{}{} }()
	res, err := ex.Wait(ctx)
	<-done
	<-done
	if restore != nil {
		restore()
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted")
		}
		return err
	}
	if res.ExitCode != 0 {
		return exitError{code: res.ExitCode}
	}
	return nil
}

func termSize(f *os.File) (rows, cols int, err error) {
	cols, rows, err = term.GetSize(int(f.Fd()))
	return rows, cols, err
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

func forwardResize(ctx context.Context, f *os.File, ex *boxlite.Execution) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if rows, cols, err := termSize(f); err == nil {
				_ = ex.ResizeTTY(ctx, rows, cols)
			}
		}
	}
}
