package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"

	"modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no CGO)
	sqlite3 "modernc.org/sqlite/lib"
)

// busyTimeout is how long a statement waits for another connection or
// process to release the database lock before it fails with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// migrations are the schema steps in order: migrations[i] takes the schema
// from version i to version i+1. Append new steps; never edit a released one.
var migrations = []string{
	// 1: boxes. Times are UTC text with nanoseconds (timeLayout), NULL when
	// unset; name is NULL for an unnamed box so that UNIQUE ignores it.
	`CREATE TABLE boxes (
		id         TEXT PRIMARY KEY,
		name       TEXT UNIQUE,
		status     TEXT NOT NULL,
		image      TEXT NOT NULL,
		rootfs     TEXT NOT NULL,
		config     BLOB,
		labels     TEXT,
		created_at TEXT NOT NULL,
		started_at TEXT,
		stopped_at TEXT,
		pid        INTEGER NOT NULL,
		error      TEXT NOT NULL
	) STRICT`,
}

// DB is the metadata database of one home directory. It is safe for use by
// many goroutines, and by several processes that open the same home at once:
// every write is a BEGIN IMMEDIATE transaction, so writers serialize on the
// database lock (waiting up to busyTimeout) while readers keep reading the
// last committed state (WAL mode).
type DB struct {
	db   *sql.DB
	path string
}

// Open opens the metadata database of l, creating the home directory and the
// database as needed, and migrates its schema to the current version. A
// database written by a newer boxlite fails with errdefs.ErrInvalidState.
func Open(ctx context.Context, l Layout) (*DB, error) {
	path := l.Database()
	db, err := open(ctx, l, path)
	if err != nil {
		return nil, fmt.Errorf("open metadata database %s: %w", path, err)
	}
	return db, nil
}

func open(ctx context.Context, l Layout, path string) (*DB, error) {
	if err := os.MkdirAll(l.Home, 0o700); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(busyTimeout.Milliseconds(), 10))
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate") // every BeginTx is BEGIN IMMEDIATE
	dsn := (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db := &DB{db: sqldb, path: path}
	// The first connection to a fresh database turns on WAL mode. When
	// several processes do that at once, SQLite answers SQLITE_BUSY without
	// waiting for the busy timeout (two connections holding a shared lock
	// and both wanting the exclusive one would deadlock), so that case is
	// retried here, within the same timeout.
	deadline := time.Now().Add(busyTimeout)
	for {
		err := db.migrate(ctx)
		if err == nil {
			return db, nil
		}
		if !isBusy(err) || time.Now().After(deadline) {
			sqldb.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			sqldb.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// isBusy reports whether err is SQLite's "database is locked", in any of
// its extended forms.
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// Close closes the database.
func (db *DB) Close() error { return db.db.Close() }

// migrate applies the missing migrations, one transaction each. Processes
// that open a fresh home at the same time serialize on the write lock; each
// step rereads the version, so no step runs twice.
func (db *DB) migrate(ctx context.Context) error {
	for {
		done, err := db.migrateStep(ctx)
		if err != nil || done {
			return err
		}
	}
}

func (db *DB) migrateStep(ctx context.Context) (done bool, err error) {
	err = db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS meta (
			key   TEXT PRIMARY KEY,
			value TEXT NOT NULL
		) STRICT`); err != nil {
			return err
		}
		var v int
		err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v)
		if err != nil && err != sql.ErrNoRows {
			return fmt.Errorf("read schema version: %w", err)
		}
		switch {
		case v > len(migrations):
			return fmt.Errorf("schema version %d, this boxlite knows up to %d: home dir written by a newer boxlite: %w",
				v, len(migrations), errdefs.ErrInvalidState)
		case v == len(migrations):
			done = true
			return nil
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate to schema version %d: %w", v+1, err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('schema_version', ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, strconv.Itoa(v+1))
		return err
	})
	return done, err
}

// write runs fn in one BEGIN IMMEDIATE transaction (see _txlock in open)
// and commits it unless fn fails.
func (db *DB) write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}
