package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/boxlite-go/boxlite"
)

// boxFlags are the flags that describe a new box (create and run).
type boxFlags struct {
	name    string
	rootfs  string
	env     []string
	workdir string
	user    string
	cpus    int
	memory  int
	disk    int
	labels  []string
}

func (f *boxFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.name, "name", "", "name the box")
	fl.StringVar(&f.rootfs, "rootfs", "", "root filesystem: a directory or an ext4 image")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the box")
	fl.StringVarP(&f.user, "user", "u", "", "user (name|uid[:group|gid])")
	fl.IntVar(&f.cpus, "cpus", 0, "virtual CPUs (default 1)")
	fl.IntVarP(&f.memory, "memory", "m", 0, "memory in MiB (default 512)")
	fl.IntVar(&f.disk, "disk", 0, "disk size in GB (default 10)")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "set a label (KEY=VALUE)")
}

// options builds the box options; args are the positional arguments, of
// which the first is the image unless --rootfs is given. It returns the
// remaining arguments.
func (f *boxFlags) options(args []string) (boxlite.BoxOptions, []string, error) {
	opts := boxlite.BoxOptions{
		Rootfs:     f.rootfs,
		Env:        f.env,
		WorkingDir: f.workdir,
		User:       f.user,
		CPUs:       f.cpus,
		MemoryMiB:  f.memory,
		DiskSizeGB: f.disk,
	}
	for _, kv := range f.labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return opts, nil, fmt.Errorf("label %q: want KEY=VALUE: %w", kv, boxlite.ErrInvalidArgument)
		}
		if opts.Labels == nil {
			opts.Labels = map[string]string{}
		}
		opts.Labels[k] = v
	}
	if f.rootfs == "" {
		if len(args) == 0 {
			return opts, nil, fmt.Errorf("give an IMAGE or --rootfs DIR: %w", boxlite.ErrInvalidArgument)
		}
		opts.Image, args = args[0], args[1:]
	}
	return opts, args, nil
}

func newCreateCmd(g *globals) *cobra.Command {
	f := &boxFlags{}
	cmd := &cobra.Command{
		Use:   "create [flags] (--rootfs DIR | IMAGE)",
		Short: "Create a box without starting it; prints its id",
		Long: "Create prepares a box's disk and prints its id. The box is detached: once\n" +
			"started it keeps running after the boxlite process exits.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, _, err := f.options(args)
			if err != nil {
				return err
			}
			opts.Detach = true
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				box, err := rt.Create(cmd.Context(), opts, f.name)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), box.ID())
				return nil
			})
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func newStartCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "start BOX...",
		Short: "Start boxes; they keep running after boxlite exits",
		Long: "Start boots each box and returns once its agent answers. Boxes made by the\n" +
			"CLI are detached and keep running after boxlite exits; a box a program\n" +
			"created without BoxOptions.Detach stops when this command exits.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				return forEach(cmd, args, func(ref string) error {
					box, err := rt.Get(cmd.Context(), ref)
					if err != nil {
						return err
					}
					if err := box.Start(cmd.Context()); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
					return nil
				})
			})
		},
	}
}

func newStopCmd(g *globals) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "stop BOX...",
		Short: "Stop running boxes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				return forEach(cmd, args, func(ref string) error {
					if err := stopBox(cmd.Context(), rt, ref, timeout, false); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
					return nil
				})
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait for a graceful shutdown before killing the box")
	return cmd
}

// stopBox stops a box; a stopped one is an error unless quiet.
func stopBox(ctx context.Context, rt *boxlite.Runtime, ref string, timeout int, quiet bool) error {
	box, err := rt.Get(ctx, ref)
	if err != nil {
		return err
	}
	if quiet && box.Info().Status != boxlite.StatusRunning {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, time.Duration(timeout)*time.Second)
	defer cancel()
	return box.Stop(sctx)
}

func newRestartCmd(g *globals) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "restart BOX...",
		Short: "Stop (when running) and start boxes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				return forEach(cmd, args, func(ref string) error {
					if err := stopBox(cmd.Context(), rt, ref, timeout, true); err != nil {
						return err
					}
					box, err := rt.Get(cmd.Context(), ref)
					if err != nil {
						return err
					}
					if err := box.Start(cmd.Context()); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
					return nil
				})
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait for a graceful shutdown before killing the box")
	return cmd
}

func newRmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] BOX...",
		Short: "Remove boxes and their files",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				return forEach(cmd, args, func(ref string) error {
					if err := rt.Remove(cmd.Context(), ref, force); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
					return nil
				})
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running box first")
	return cmd
}

func newInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect BOX...",
		Short: "Print boxes' state as a JSON array",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				infos := []boxlite.BoxInfo{}
				err := forEach(cmd, args, func(ref string) error {
					box, err := rt.Get(cmd.Context(), ref)
					if err != nil {
						return err
					}
					infos = append(infos, box.Info())
					return nil
				})
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(infos); jerr != nil {
					return jerr
				}
				return err
			})
		},
	}
}

func newWaitCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "wait BOX...",
		Short: "Wait for boxes to stop; print their main processes' exit codes",
		Long: "Wait blocks until each box has stopped and prints the exit code of its main\n" +
			"process's latest run (0 for a box without a main process), as docker wait does.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				return forEach(cmd, args, func(ref string) error {
					box, err := rt.Get(cmd.Context(), ref)
					if err != nil {
						return err
					}
					res, err := box.Wait(cmd.Context())
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), res.ExitCode)
					return nil
				})
			})
		},
	}
}

func newLogsCmd(g *globals) *cobra.Command {
	var console, follow bool
	cmd := &cobra.Command{
		Use:   "logs [--console] [-f] BOX",
		Short: "Print the output of a box's main process, or its console log",
		Long: "Logs prints the output of the box's main process (the COMMAND of run -d):\n" +
			"stdout and stderr, interleaved as written, of every run (each start appends).\n" +
			"-f follows it until the main process ends.\n\n" +
			"For a box without a main process, or with --console, it prints the serial\n" +
			"console of the box's latest boot instead (kernel and agent messages).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				box, err := rt.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				switch {
				case console && follow:
					return fmt.Errorf("logs: --console and -f do not go together: %w", boxlite.ErrInvalidArgument)
				case follow && box.Info().MainCommand == nil:
					return fmt.Errorf("logs -f: box %s has no main process to follow: %w", args[0], boxlite.ErrInvalidArgument)
				case console || box.Info().MainCommand == nil:
					return copyConsole(cmd.OutOrStdout(), box)
				}
				r, err := box.Logs(cmd.Context(), boxlite.LogOptions{Follow: follow})
				if err != nil {
					return err
				}
				defer r.Close()
				_, err = io.Copy(cmd.OutOrStdout(), r)
				if errors.Is(err, context.Canceled) {
					return nil // interrupted while following
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&console, "console", false, "print the console log of the latest boot")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the main process's output until it ends")
	return cmd
}

// copyConsole writes the box's console log; a box never started has none.
func copyConsole(w io.Writer, box *boxlite.Box) error {
	f, err := os.Open(box.ConsoleLogPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func newPsCmd(g *globals) *cobra.Command {
	var all, quiet bool
	var format string
	cmd := &cobra.Command{
		Use:     "ps [-a] [--format FORMAT]",
		Aliases: []string{"ls"},
		Short:   "List running boxes (-a: all)",
		Long: "Ps lists boxes. --format is \"table\" (the default), \"json\" (one object per\n" +
			"line), a Go template over boxlite.BoxInfo such as '{{.ID}} {{.Status}}', or\n" +
			"\"table TEMPLATE\" for aligned columns under a header.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if quiet {
				format = "{{.ID}}"
			}
			p, err := newPrinter(cmd.OutOrStdout(), format)
			if err != nil {
				return err
			}
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				infos, err := rt.List(cmd.Context())
				if err != nil {
					return err
				}
				for _, i := range infos {
					if all || i.Status == boxlite.StatusRunning {
						if err := p.print(i); err != nil {
							return err
						}
					}
				}
				return p.flush()
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show every box, not only running ones")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only ids")
	cmd.Flags().StringVar(&format, "format", "table", "table, json, or a Go template over BoxInfo")
	return cmd
}

const defaultTable = "table {{.ID}}\t{{.Name}}\t{{.Status}}\t{{source .}}\t{{.CPUs}}\t{{.MemoryMiB}}\t{{ago .CreatedAt}}"

var tableHeader = "ID\tNAME\tSTATUS\tSOURCE\tCPUS\tMEMORY\tCREATED"

// printer writes BoxInfos in one of ps's formats.
type printer struct {
	tw   *tabwriter.Writer
	w    io.Writer
	tmpl *template.Template
	json *json.Encoder
}

var fieldRef = regexp.MustCompile(`\{\{\s*\.(\w+)\s*\}\}`)

func newPrinter(w io.Writer, format string) (*printer, error) {
	p := &printer{w: w}
	switch {
	case format == "json":
		p.json = json.NewEncoder(w)
		return p, nil
	case format == "" || format == "table":
		format = defaultTable
	}
	header := ""
	if rest, ok := strings.CutPrefix(format, "table"); ok && (rest == "" || rest[0] == ' ') {
		format = strings.TrimSpace(rest)
		if format == strings.TrimPrefix(defaultTable, "table ") {
			header = tableHeader
		} else {
			header = fieldRef.ReplaceAllStringFunc(format, func(s string) string {
				return strings.ToUpper(fieldRef.FindStringSubmatch(s)[1])
			})
		}
		p.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		p.w = p.tw
	}
	format = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format)
	tmpl, err := template.New("format").Funcs(template.FuncMap{
		"source": func(i boxlite.BoxInfo) string {
			if i.Image != "" {
				return i.Image
			}
			return i.Rootfs
		},
		"ago": func(t time.Time) string { return time.Since(t).Round(time.Second).String() + " ago" },
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(format)
	if err != nil {
		return nil, fmt.Errorf("format: %v: %w", err, boxlite.ErrInvalidArgument)
	}
	if err := tmpl.Execute(io.Discard, boxlite.BoxInfo{}); err != nil {
		return nil, fmt.Errorf("format: %v: %w", err, boxlite.ErrInvalidArgument)
	}
	p.tmpl = tmpl
	if header != "" {
		fmt.Fprintln(p.w, header)
	}
	return p, nil
}

func (p *printer) print(i boxlite.BoxInfo) error {
	if p.json != nil {
		return p.json.Encode(i)
	}
	if err := p.tmpl.Execute(p.w, i); err != nil {
		return fmt.Errorf("format: %v: %w", err, boxlite.ErrInvalidArgument)
	}
	_, err := fmt.Fprintln(p.w)
	return err
}

func (p *printer) flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}
