package boxlite

import "github.com/boxlite-go/boxlite/internal/errdefs"

// Error sentinels; test with errors.Is.
var (
	ErrNotFound          = errdefs.ErrNotFound
	ErrAlreadyExists     = errdefs.ErrAlreadyExists
	ErrInvalidState      = errdefs.ErrInvalidState
	ErrInvalidArgument   = errdefs.ErrInvalidArgument
	ErrMissingDependency = errdefs.ErrMissingDependency
	ErrUnknownUser       = errdefs.ErrUnknownUser
	ErrBoxDown           = errdefs.ErrBoxDown
	ErrGuestPanic        = errdefs.ErrGuestPanic
	ErrProtocol          = errdefs.ErrProtocol
	ErrImage             = errdefs.ErrImage
	ErrPortInUse         = errdefs.ErrPortInUse
	ErrPermission        = errdefs.ErrPermission
	ErrNetwork           = errdefs.ErrNetwork
)
