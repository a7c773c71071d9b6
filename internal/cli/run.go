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
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/boxlite-go/boxlite"
)

type runFlags struct {
	boxFlags
	stdio
	remove  bool
	detach  bool
	timeout time.Duration
}

func newRunCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run [flags] (--rootfs DIR | IMAGE) [--] [COMMAND [ARG...]]",
		Short: "Run a command in a new box",
		Long: "Run boots a new box from an OCI image or a root filesystem (a directory or an\n" +
			"ext4 image), runs COMMAND in it (for an image: its entrypoint with COMMAND as\n" +
			"arguments, or its default command), prints its output, stops the box, and\n" +
			"exits with the command's exit code (125 when the runtime fails). The stopped\n" +
			"box remains (start, exec, rm it later) unless --rm is given.\n\n" +
			"With -d the box is created and started detached, its id printed, and boxlite\n" +
			"exits while the box keeps running. COMMAND (for an image: its entrypoint with\n" +
			"COMMAND as arguments, or without COMMAND its default command, as docker run\n" +
			"-d does) becomes the box's main process: its output goes to the box's log\n" +
			"(boxlite logs), and when it exits the box stops and keeps its exit code\n" +
			"(boxlite inspect: ExitCode); start runs it again. A --rootfs box without\n" +
			"COMMAND has no main process: it idles until stopped; use exec in it.",
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(cmd, g, args)
		},
	}
	cmd.Flags().SetInterspersed(false)
	fl := cmd.Flags()
	f.boxFlags.register(fl)
	f.stdio.register(fl)
	fl.BoolVar(&f.remove, "rm", false, "remove the box when the command ends")
	fl.BoolVarP(&f.detach, "detach", "d", false, "start the box detached and print its id")
	fl.DurationVar(&f.timeout, "timeout", 0, "kill the command after this long")
	return cmd
}

func (f *runFlags) run(cmd *cobra.Command, g *globals, args []string) error {
	opts, args, err := f.options(args)
	if err != nil {
		return err
	}
	switch {
	case f.detach && (f.remove || f.interactive || f.tty || f.timeout != 0):
		return fmt.Errorf("run -d does not go with --rm, -i, -t or --timeout: %w", boxlite.ErrInvalidArgument)
	case !f.detach && opts.Rootfs != "" && len(args) == 0:
		return fmt.Errorf("no command given: %w", boxlite.ErrInvalidArgument)
	}
	// A box that stays is detached, so a later start keeps it running
	// after that boxlite exits; a --rm box dies with this process.
	opts.Detach = !f.remove
	opts.AutoRemove = f.remove
	if f.detach {
		// The command, else an image's own, is the main process.
		if len(args) > 0 {
			opts.Cmd = args
		}
		opts.MainProcess = len(args) > 0 || opts.Image != ""
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return g.withRuntime(func(rt *boxlite.Runtime) error {
		box, err := rt.Create(ctx, opts, f.name)
		if err != nil {
			return err
		}
		cleanup := func() {
			if f.remove {
				_ = rt.Remove(context.Background(), box.ID(), true)
			}
		}
		if err := box.Start(ctx); err != nil {
			cleanup()
			return err
		}
		if f.detach {
			fmt.Fprintln(cmd.OutOrStdout(), box.ID())
			return nil
		}
		defer func() {
			if !f.remove {
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_ = box.Stop(sctx)
				cancel()
			}
			cleanup()
		}()
		c, err := box.Command(args...)
		if err != nil {
			return err
		}
		c.Timeout = f.timeout
		return f.stdio.exec(ctx, cmd, box, c)
	})
}

// stdio are the flags that connect a command to the terminal (run, exec).
type stdio struct {
	interactive bool
	tty         bool
}

func (s *stdio) register(fl *pflag.FlagSet) {
	fl.BoolVarP(&s.interactive, "interactive", "i", false, "keep stdin open and pass it to the command")
	fl.BoolVarP(&s.tty, "tty", "t", false, "allocate a terminal")
}

// exec runs c in box attached to cmd's stdin, stdout and stderr. With a
// tty and a terminal on stdin, the terminal is put in raw mode and its
// size follows SIGWINCH. A non-zero exit status becomes an exitError.
func (s *stdio) exec(ctx context.Context, cmd *cobra.Command, box *boxlite.Box, c boxlite.Command) error {
	c.TTY = s.tty
	in := cmd.InOrStdin()
	if s.interactive {
		c.Stdin = in
	}
	termFile, isTerm := stdinIsTerminal(in)
	isTerm = isTerm && s.tty
	if isTerm {
		if rows, cols, err := termSize(termFile); err == nil {
			c.Rows, c.Cols = rows, cols
		}
		if state, err := term.MakeRaw(int(termFile.Fd())); err == nil {
			defer term.Restore(int(termFile.Fd()), state)
		}
	}
	ex, err := box.Exec(ctx, c)
	if err != nil {
		return err
	}
	defer ex.Close()
	if isTerm {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go forwardResize(rctx, termFile, ex)
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(cmd.OutOrStdout(), ex.Stdout()); done <- struct{}{} }()
	go func() { io.Copy(cmd.ErrOrStderr(), ex.Stderr()); done <- struct{}{} }()
	res, err := ex.Wait(ctx)
	<-done
	<-done
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return errors.New("interrupted")
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
