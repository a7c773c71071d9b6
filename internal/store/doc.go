// Package store owns the runtime's home directory: every file name of the
// on-disk layout is decided here and documented in docs/LAYOUT.md.
//
// The home also holds the metadata database, boxlite.db: an SQLite database
// (modernc.org/sqlite, no CGO) with one row per box. Several processes (an
// application, the CLI, the REST server) may open the same home at once.
// The database runs in WAL mode, so readers never wait for a writer; every
// write is a BEGIN IMMEDIATE transaction, so writers from all processes
// serialize on one lock, waiting for it up to a busy timeout instead of
// failing with "database is locked". UpdateBox is a read-modify-write in one
// such transaction, which makes status changes from different processes
// atomic.
//
// The schema carries a version in the meta table. Open applies the missing
// migrations, one transaction each, and refuses a database whose version is
// newer than this code knows (errdefs.ErrInvalidState). Times are stored as
// fixed-width UTC text with nanoseconds, NULL for the zero time.
package store
