//go:build !linux

package guest

import (
	"fmt"
	"os"
)

// Main is the agent's entry point; the agent runs only on Linux.
func Main() {
	fmt.Fprintln(os.Stderr, "boxlite-agent: runs only as init of a Linux box")
	os.Exit(1)
}
