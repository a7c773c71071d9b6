// Package store owns the runtime's home directory: every file name of the
// on-disk layout is decided here and documented in docs/LAYOUT.md. (The
// SQLite metadata store arrives with persistent boxes.)
package store
