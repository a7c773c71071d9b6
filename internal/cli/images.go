package cli

import (
	"context"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/boxlite-go/boxlite"
)

func newPullCmd(g *globals) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull [flags] IMAGE",
		Short: "Fetch an image into the local cache",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			defer rt.Shutdown(context.WithoutCancel(cmd.Context()))
			var report func(boxlite.PullProgress)
			if !quiet {
				report = progressPrinter(cmd.ErrOrStderr())
			}
			info, err := rt.PullImage(cmd.Context(), args[0], report)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s@%s\n", info.Ref, info.Digest)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the result")
	return cmd
}

// progressPrinter prints one line per layer when it starts, completes,
// or is found in the cache; at most every 500 ms in between.
func progressPrinter(w io.Writer) func(boxlite.PullProgress) {
	var mu sync.Mutex
	last := map[string]time.Time{}
	return func(p boxlite.PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		short := p.Digest
		if len(short) > 19 {
			short = short[7:19]
		}
		now := time.Now()
		done := p.Cached || (p.Total > 0 && p.Complete >= p.Total)
		if !done && now.Sub(last[p.Digest]) < 500*time.Millisecond {
			return
		}
		last[p.Digest] = now
		switch {
		case p.Cached:
			fmt.Fprintf(w, "%s: already cached\n", short)
		case done:
			fmt.Fprintf(w, "%s: done %s\n", short, size(p.Total))
		default:
			fmt.Fprintf(w, "%s: %s / %s\n", short, size(p.Complete), size(p.Total))
		}
	}
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func newImagesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "images",
		Aliases: []string{"image-ls"},
		Short:   "List cached images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			defer rt.Shutdown(context.WithoutCancel(cmd.Context()))
			imgs, err := rt.Images(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REFERENCE\tDIGEST\tPLATFORM\tSIZE\tPULLED")
			for _, i := range imgs {
				d := i.Digest
				if len(d) > 19 {
					d = d[:19]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.Ref, d, i.Platform, size(i.Size), i.Pulled.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
}

func newRmiCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rmi IMAGE...",
		Short: "Remove cached images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			defer rt.Shutdown(context.WithoutCancel(cmd.Context()))
			for _, ref := range args {
				if err := rt.RemoveImage(cmd.Context(), ref); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), ref)
			}
			return nil
		},
	}
}

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage cached images",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "prune",
		Short: "Remove the images and base disks no box uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			defer rt.Shutdown(context.WithoutCancel(cmd.Context()))
			removed, err := rt.PruneImages(cmd.Context())
			for _, ref := range removed {
				fmt.Fprintln(cmd.OutOrStdout(), ref)
			}
			return err
		},
	})
	return cmd
}
