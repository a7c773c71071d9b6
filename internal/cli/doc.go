// Package cli is the boxlite command line: cobra commands that parse flags
// and call the public boxlite API. No business logic lives here.
package cli
