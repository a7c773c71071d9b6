// Package errdefs holds the error sentinels shared by the internal packages.
// The public package re-exports each of them, so callers test errors with
// errors.Is against boxlite.ErrNotFound and friends; internal code wraps
// them with %w and the subject ("box %q: start: %w").
package errdefs

import "errors"

var (
	// ErrNotFound: the named box, image, file or user does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a box with that name or id exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidState: the operation does not fit the box's current status.
	ErrInvalidState = errors.New("invalid state")
	// ErrInvalidArgument: the caller passed something malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrMissingDependency: a host program or file the runtime needs (QEMU,
	// a guest kernel, the guest agent) is absent; the message names it and
	// the command that installs it.
	ErrMissingDependency = errors.New("missing dependency")
	// ErrUnknownUser: the user or group of a command is not in the box's
	// /etc/passwd or /etc/group.
	ErrUnknownUser = errors.New("unknown user")
	// ErrBoxDown: the box's VM ended (guest panic, QEMU killed, ...).
	ErrBoxDown = errors.New("box is down")
	// ErrGuestPanic: the guest kernel panicked; wraps ErrBoxDown's sibling
	// cause and is reported through Box.Info and failed calls.
	ErrGuestPanic = errors.New("guest kernel panic")
	// ErrProtocol: the guest agent spoke an incompatible protocol.
	ErrProtocol = errors.New("agent protocol mismatch")
	// ErrImage: the image could not be obtained or prepared.
	ErrImage = errors.New("image error")
	// ErrPortInUse: a host port to forward is already bound by another
	// program.
	ErrPortInUse = errors.New("port already in use")
	// ErrPermission: the runtime lacks a privilege the request needs (a
	// host port below 1024, say).
	ErrPermission = errors.New("permission denied")
	// ErrNetwork: the box's network could not be set up.
	ErrNetwork = errors.New("network error")
)
