// Command boxlite is the BoxLite command line: run commands in
// hardware-isolated micro-VMs.
package main

import (
	"context"
	"os"

	"github.com/boxlite-go/boxlite/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
