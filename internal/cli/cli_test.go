package cli

import (
	"errors"
	"fmt"
	"testing"

	"github.com/boxlite-go/boxlite"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"not found", fmt.Errorf("box %q: %w", "x", boxlite.ErrNotFound), ExitRuntimeError},
		{"already exists", boxlite.ErrAlreadyExists, ExitRuntimeError},
		{"invalid state", boxlite.ErrInvalidState, ExitRuntimeError},
		{"image", boxlite.ErrImage, ExitRuntimeError},
		{"unknown user", boxlite.ErrUnknownUser, ExitCannotExec},
		{"command status", exitError{code: 127}, 127},
		{"wrapped status", fmt.Errorf("x: %w", exitError{code: 3}), 3},
		{"other", errors.New("boom"), ExitRuntimeError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Fatalf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}
