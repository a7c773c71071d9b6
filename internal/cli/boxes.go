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
	publish []string
	network string
	allow   []string
	hosts   []string
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
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "forward a host port: [HOSTIP:]HOSTPORT:BOXPORT[/udp] (HOSTPORT 0 picks one; HOSTIP defaults to 127.0.0.1)")
	fl.StringVar(&f.network, "network", "", "network: \"none\" gives the box no network card")
	fl.StringSliceVar(&f.allow, "allow-net", nil, "egress allow-list entries: host, *.domain, IP, CIDR, "+boxlite.HostAlias+", * (repeatable or comma-separated; default: anywhere)")
	fl.StringArrayVar(&f.hosts, "add-host", nil, "static DNS answer for the box (NAME:IP)")
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
	switch f.network {
	case "", "default", "enabled":
	case "none", "disabled":
		opts.Network = boxlite.NetworkDisabled
	default:
		return opts, nil, fmt.Errorf("network %q: want none or default: %w", f.network, boxlite.ErrInvalidArgument)
	}
	for _, spec := range f.publish {
		p, err := boxlite.ParsePortMapping(spec)
		if err != nil {
			return opts, nil, err
		}
		opts.Ports = append(opts.Ports, p)
	}
	opts.AllowNet = f.allow
	for _, h := range f.hosts {
		name, ip, ok := strings.Cut(h, ":")
		if !ok || name == "" || ip == "" {
			return opts, nil, fmt.Errorf("add-host %q: want NAME:IP: %w", h, boxlite.ErrInvalidArgument)
		}
		if opts.Hosts == nil {
			opts.Hosts = map[string]string{}
		}
		opts.Hosts[name] = ip
	}
	if f.rootfs == "" {
		if len(args) == 0 {
			return opts, nil, fmt.Errorf("give an IMAGE or --rootfs DIR: %w", boxlite.ErrInvalidArgument)
		}
		opts.Image, args = args[0], args[1:]
	}
	return opts, dropDash(args), nil
}

// dropDash removes the "--" that may separate a box (or image) from the
// command, as in "exec BOX -- CMD": flag parsing stops at BOX, so the dash
// is still there.
func dropDash(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
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
	var console, follow, netLog bool
	cmd := &cobra.Command{
		Use:   "logs [--console | --net] [-f] BOX",
		Short: "Print the output of a box's main process, or its console log",
		Long: "Logs prints the output of the box's main process (the COMMAND of run -d):\n" +
			"stdout and stderr, interleaved as written, of every run (each start appends).\n" +
			"-f follows it until the main process ends.\n\n" +
			"For a box without a main process, or with --console, it prints the serial\n" +
			"console of the box's latest boot instead (kernel and agent messages).\n\n" +
			"--net prints the box's egress audit log: every DNS query, TCP connection and\n" +
			"UDP flow it made, allowed or denied, with the rule or reason.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				box, err := rt.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				switch {
				case netLog && (console || follow):
					return fmt.Errorf("logs: --net goes alone: %w", boxlite.ErrInvalidArgument)
				case netLog:
					return printNetLog(cmd, box)
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
	cmd.Flags().BoolVar(&netLog, "net", false, "print the egress audit log instead: every connection and DNS query, allowed or denied")
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

// printNetLog prints a box's egress audit log, one event per line.
func printNetLog(cmd *cobra.Command, box *boxlite.Box) error {
	evs, err := box.NetworkLog(cmd.Context())
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tPROTO\tDESTINATION\tHOST\tVERDICT\tREASON")
	for _, e := range evs {
		verdict := "deny"
		if e.Allow {
			verdict = "allow"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.RFC3339Nano), e.Proto,
			orDash(e.Dst), orDash(e.Host), verdict, e.Reason)
	}
	return w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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

const defaultTable = "table {{.ID}}\t{{.Name}}\t{{.Status}}\t{{source .}}\t{{.CPUs}}\t{{.MemoryMiB}}\t{{ago .CreatedAt}}\t{{ports .}}"

var tableHeader = "ID\tNAME\tSTATUS\tSOURCE\tCPUS\tMEMORY\tCREATED\tPORTS"

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
		"ports": func(i boxlite.BoxInfo) string {
			var ps []string
			for _, p := range i.Ports {
				ps = append(ps, p.String())
			}
			return strings.Join(ps, ", ")
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
