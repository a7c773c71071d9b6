package boxlite

import (
	"os"

	"github.com/boxlite-go/boxlite/internal/supervisor"
)

// init turns a re-executed host program into a box supervisor (see
// internal/supervisor): any program that imports boxlite can supervise the
// boxes it starts, with no separate binary to install.
func init() {
	if raw := os.Getenv(supervisor.Env); raw != "" {
		os.Unsetenv(supervisor.Env)
		os.Exit(supervisor.Main(raw))
	}
}
