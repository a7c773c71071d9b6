package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

// Box is the stored record of one box.
type Box struct {
	ID     string
	Name   string // "" for an unnamed box; unique otherwise
	Status string
	Image  string
	Rootfs string
	Config []byte // JSON of the box options; opaque to the store

	CreatedAt time.Time // set to now by CreateBox when zero; immutable
	StartedAt time.Time // zero when never started
	StoppedAt time.Time // zero when never stopped
	PID       int
	Error     string

	Labels map[string]string
}

// timeLayout stores times as fixed-width UTC text with nanoseconds, so they
// round-trip exactly and sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

const boxColumns = `id, name, status, image, rootfs, config, labels,
	created_at, started_at, stopped_at, pid, error`

// CreateBox stores a new box. An id or a non-empty name already in use fails
// with errdefs.ErrAlreadyExists.
func (db *DB) CreateBox(ctx context.Context, b Box) error {
	if b.ID == "" {
		return fmt.Errorf("create box: empty id: %w", errdefs.ErrInvalidArgument)
	}
	if b.CreatedAt.IsZero() {
		b.CreatedAt = time.Now()
	}
	args, err := boxArgs(b)
	if err != nil {
		return fmt.Errorf("create box %q: %w", b.ID, err)
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM boxes WHERE id = ?`, b.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("box id %q: %w", b.ID, errdefs.ErrAlreadyExists)
		}
		if err := checkName(ctx, tx, b); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO boxes (`+boxColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("create box %q: %w", b.ID, err)
	}
	return nil
}

// GetBox finds a box by exact id, then by exact name, then by a unique id
// prefix. No match fails with errdefs.ErrNotFound, a prefix of several ids
// with errdefs.ErrInvalidArgument.
func (db *DB) GetBox(ctx context.Context, ref string) (Box, error) {
	if ref == "" {
		return Box{}, fmt.Errorf("get box: empty reference: %w", errdefs.ErrInvalidArgument)
	}
	// One query, so that the three lookups see the same snapshot.
	boxes, err := db.queryBoxes(ctx, `WHERE name = ?1 OR substr(id, 1, length(?1)) = ?1`, ref)
	if err != nil {
		return Box{}, fmt.Errorf("get box %q: %w", ref, err)
	}
	var byName, byPrefix []Box
	for _, b := range boxes {
		switch {
		case b.ID == ref:
			return b, nil
		case b.Name == ref:
			byName = append(byName, b)
		case strings.HasPrefix(b.ID, ref):
			byPrefix = append(byPrefix, b)
		}
	}
	switch {
	case len(byName) == 1:
		return byName[0], nil
	case len(byPrefix) == 1:
		return byPrefix[0], nil
	case len(byPrefix) > 1:
		return Box{}, fmt.Errorf("box %q: prefix matches %d boxes: %w", ref, len(byPrefix), errdefs.ErrInvalidArgument)
	}
	return Box{}, fmt.Errorf("box %q: %w", ref, errdefs.ErrNotFound)
}

// ListBoxes returns every box, oldest first.
func (db *DB) ListBoxes(ctx context.Context) ([]Box, error) {
	boxes, err := db.queryBoxes(ctx, ``)
	if err != nil {
		return nil, fmt.Errorf("list boxes: %w", err)
	}
	return boxes, nil
}

// UpdateBox reads the box with the given id, lets fn change it and writes it
// back, all in one BEGIN IMMEDIATE transaction: concurrent updates, from this
// process or others, serialize and none is lost. fn may run with the database
// locked, so it must be quick; its error aborts the update and is returned
// unchanged. fn must not change ID or CreatedAt.
func (db *DB) UpdateBox(ctx context.Context, id string, fn func(*Box) error) (Box, error) {
	var b Box
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		b, err = scanBox(tx.QueryRowContext(ctx, `SELECT `+boxColumns+` FROM boxes WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("box %q: %w", id, errdefs.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("box %q: %w", id, err)
		}
		created := b.CreatedAt
		if err := fn(&b); err != nil {
			return err
		}
		if b.ID != id || !b.CreatedAt.Equal(created) {
			return fmt.Errorf("box %q: id and creation time cannot change: %w", id, errdefs.ErrInvalidArgument)
		}
		if err := checkName(ctx, tx, b); err != nil {
			return err
		}
		args, err := boxArgs(b)
		if err != nil {
			return fmt.Errorf("box %q: %w", id, err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE boxes SET (`+boxColumns+`) =
			(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE id = ?`, append(args, id)...)
		if err != nil {
			return fmt.Errorf("box %q: update: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return Box{}, err
	}
	return b, nil
}

// DeleteBox removes the box with the given id; a missing box fails with
// errdefs.ErrNotFound.
func (db *DB) DeleteBox(ctx context.Context, id string) error {
	res, err := db.db.ExecContext(ctx, `DELETE FROM boxes WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete box %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("delete box %q: %w", id, errdefs.ErrNotFound)
	}
	return nil
}

// checkName fails with errdefs.ErrAlreadyExists when another box has b's name.
func checkName(ctx context.Context, tx *sql.Tx, b Box) error {
	if b.Name == "" {
		return nil
	}
	var other string
	err := tx.QueryRowContext(ctx, `SELECT id FROM boxes WHERE name = ? AND id != ?`, b.Name, b.ID).Scan(&other)
	switch {
	case err == nil:
		return fmt.Errorf("box name %q (box %s): %w", b.Name, other, errdefs.ErrAlreadyExists)
	case errors.Is(err, sql.ErrNoRows):
		return nil
	}
	return err
}

func (db *DB) queryBoxes(ctx context.Context, where string, args ...any) ([]Box, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT `+boxColumns+` FROM boxes `+where+
		` ORDER BY created_at, rowid`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var boxes []Box
	for rows.Next() {
		b, err := scanBox(rows)
		if err != nil {
			return nil, err
		}
		boxes = append(boxes, b)
	}
	return boxes, rows.Err()
}

// boxArgs returns b's values in the order of boxColumns.
func boxArgs(b Box) ([]any, error) {
	var labels any // NULL when there are none
	if len(b.Labels) > 0 {
		j, err := json.Marshal(b.Labels)
		if err != nil {
			return nil, err
		}
		labels = string(j)
	}
	var config any
	if len(b.Config) > 0 {
		config = b.Config
	}
	return []any{b.ID, nullString(b.Name), b.Status, b.Image, b.Rootfs, config, labels,
		formatTime(b.CreatedAt), formatTime(b.StartedAt), formatTime(b.StoppedAt), b.PID, b.Error}, nil
}

func scanBox(row interface{ Scan(...any) error }) (Box, error) {
	var (
		b                         Box
		name, labels              sql.NullString
		created, started, stopped sql.NullString
	)
	err := row.Scan(&b.ID, &name, &b.Status, &b.Image, &b.Rootfs, &b.Config, &labels,
		&created, &started, &stopped, &b.PID, &b.Error)
	if err != nil {
		return Box{}, err
	}
	b.Name = name.String
	if labels.Valid {
		if err := json.Unmarshal([]byte(labels.String), &b.Labels); err != nil {
			return Box{}, fmt.Errorf("box %q: labels: %w", b.ID, err)
		}
	}
	for _, t := range []struct {
		dst *time.Time
		src sql.NullString
	}{{&b.CreatedAt, created}, {&b.StartedAt, started}, {&b.StoppedAt, stopped}} {
		if *t.dst, err = parseTime(t.src); err != nil {
			return Box{}, fmt.Errorf("box %q: %w", b.ID, err)
		}
	}
	return b, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func formatTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeLayout)
}

func parseTime(s sql.NullString) (time.Time, error) {
	if !s.Valid {
		return time.Time{}, nil
	}
	return time.Parse(timeLayout, s.String)
}
