package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/boxlite-go/boxlite"
)

func newCloneCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "clone [--name NAME] BOX",
		Short: "Copy a box's disk into a new, stopped box (also while it runs)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				box, err := rt.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				c, err := box.Clone(cmd.Context(), boxlite.CloneOptions{}, name)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), c.ID())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the new box")
	return cmd
}

func newExportCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "export [-o DIR] BOX",
		Short: "Write a box to DIR/<name>.boxlite (also while it runs)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				box, err := rt.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				a, err := box.Export(cmd.Context(), boxlite.ExportOptions{}, dir)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), a.Path)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&dir, "output", "o", ".", "directory to write the archive to")
	return cmd
}

func newImportCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import [--name NAME] ARCHIVE",
		Short: "Create a stopped box from a .boxlite archive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRuntime(func(rt *boxlite.Runtime) error {
				b, err := rt.Import(cmd.Context(), args[0], name)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), b.ID())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the new box")
	return cmd
}
