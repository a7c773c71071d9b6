package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxlite-go/boxlite/internal/errdefs"
)

func openTest(t *testing.T, home string) *DB {
	t.Helper()
	db, err := Open(t.Context(), Layout{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func testBox(id, name string, created time.Time) Box {
	return Box{ID: id, Name: name, Status: "configured", Image: "alpine:latest", CreatedAt: created}
}

func TestBoxRoundTrip(t *testing.T) {
	db := openTest(t, t.TempDir())
	ctx := t.Context()
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	est := time.FixedZone("EST", -5*3600)
	for _, tc := range []struct {
		name string
		in   Box
		want Box // differs from in where the store normalizes
	}{
		{
			name: "all fields",
			in: Box{ID: "aaaa1111", Name: "web", Status: "running", Image: "nginx:1", Rootfs: "/r",
				Config: []byte(`{"CPUs":2}`), CreatedAt: t0, StartedAt: t0.Add(time.Nanosecond),
				StoppedAt: t0.Add(time.Hour), PID: 4242, Error: "guest kernel panic",
				Labels: map[string]string{"app": "web", "tier": ""}},
		},
		{
			name: "zero values",
			in:   Box{ID: "bbbb2222", CreatedAt: t0.Add(time.Second)},
		},
		{
			name: "local times come back as utc",
			in:   Box{ID: "cccc3333", CreatedAt: t0.In(est).Add(2 * time.Second), StartedAt: t0.In(est)},
			want: Box{ID: "cccc3333", CreatedAt: t0.Add(2 * time.Second), StartedAt: t0},
		},
		{
			name: "empty config and labels read as nil",
			in:   Box{ID: "dddd4444", CreatedAt: t0.Add(3 * time.Second), Config: []byte{}, Labels: map[string]string{}},
			want: Box{ID: "dddd4444", CreatedAt: t0.Add(3 * time.Second)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want.ID == "" {
				want = tc.in
			}
			if err := db.CreateBox(ctx, tc.in); err != nil {
				t.Fatal(err)
			}
			got, err := db.GetBox(ctx, tc.in.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("GetBox =\n%+v\nwant\n%+v", got, want)
			}
		})
	}

	list, err := db.ListBoxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range list {
		ids = append(ids, b.ID)
	}
	if want := []string{"aaaa1111", "bbbb2222", "cccc3333", "dddd4444"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("ListBoxes ids = %v, want %v", ids, want)
	}

	if err := db.DeleteBox(ctx, "aaaa1111"); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		db.DeleteBox(ctx, "aaaa1111"),
		func() error { _, err := db.GetBox(ctx, "aaaa1111"); return err }(),
		func() error { _, err := db.UpdateBox(ctx, "aaaa1111", func(*Box) error { return nil }); return err }(),
	} {
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("after delete: %v, want ErrNotFound", err)
		}
	}
	// The name of a deleted box is free again.
	if err := db.CreateBox(ctx, testBox("eeee5555", "web", time.Time{})); err != nil {
		t.Fatal(err)
	}
}

func TestCreatedAtDefaultsToNow(t *testing.T) {
	db := openTest(t, t.TempDir())
	before := time.Now()
	if err := db.CreateBox(t.Context(), Box{ID: "x"}); err != nil {
		t.Fatal(err)
	}
	b, err := db.GetBox(t.Context(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if b.CreatedAt.Before(before.Add(-time.Second)) || b.CreatedAt.After(time.Now()) {
		t.Fatalf("CreatedAt = %v, want about %v", b.CreatedAt, before)
	}
}

func TestCreateBoxErrors(t *testing.T) {
	db := openTest(t, t.TempDir())
	ctx := t.Context()
	if err := db.CreateBox(ctx, testBox("id1", "one", time.Time{})); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateBox(ctx, testBox("id2", "", time.Time{})); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		box     Box
		want    error
		mention string
	}{
		{"duplicate id", testBox("id1", "other", time.Time{}), errdefs.ErrAlreadyExists, `box id "id1"`},
		{"duplicate name", testBox("id3", "one", time.Time{}), errdefs.ErrAlreadyExists, `box name "one"`},
		{"second unnamed box is fine", testBox("id4", "", time.Time{}), nil, ""},
		{"empty id", testBox("", "x", time.Time{}), errdefs.ErrInvalidArgument, "empty id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := db.CreateBox(ctx, tc.box)
			if !errors.Is(err, tc.want) || (err != nil && !strings.Contains(err.Error(), tc.mention)) {
				t.Fatalf("CreateBox = %v, want %v mentioning %q", err, tc.want, tc.mention)
			}
		})
	}
}

func TestGetBox(t *testing.T) {
	db := openTest(t, t.TempDir())
	ctx := t.Context()
	for _, b := range []Box{
		testBox("abc123", "web", time.Time{}),
		testBox("abd456", "", time.Time{}),
		testBox("ff0000", "abc123x", time.Time{}),
		testBox("web999", "", time.Time{}), // its id prefix "web" loses to the name "web"
	} {
		if err := db.CreateBox(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		ref     string
		wantID  string
		wantErr error
		mention string
	}{
		{ref: "abc123", wantID: "abc123"},
		{ref: "web", wantID: "abc123"},
		{ref: "abc123x", wantID: "ff0000"},
		{ref: "abd", wantID: "abd456"},
		{ref: "f", wantID: "ff0000"},
		{ref: "web9", wantID: "web999"},
		{ref: "ab", wantErr: errdefs.ErrInvalidArgument, mention: "2 boxes"},
		{ref: "zz", wantErr: errdefs.ErrNotFound},
		{ref: "ABC123", wantErr: errdefs.ErrNotFound},
		{ref: "%", wantErr: errdefs.ErrNotFound},
		{ref: "", wantErr: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			b, err := db.GetBox(ctx, tc.ref)
			if !errors.Is(err, tc.wantErr) || b.ID != tc.wantID ||
				(err != nil && !strings.Contains(err.Error(), tc.mention)) {
				t.Fatalf("GetBox(%q) = %q, %v; want %q, %v mentioning %q",
					tc.ref, b.ID, err, tc.wantID, tc.wantErr, tc.mention)
			}
		})
	}
}

func TestUpdateBox(t *testing.T) {
	db := openTest(t, t.TempDir())
	ctx := t.Context()
	created := time.Date(2025, 1, 1, 0, 0, 0, 1, time.UTC)
	for _, b := range []Box{testBox("id1", "one", created), testBox("id2", "two", created)} {
		if err := db.CreateBox(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	errBoom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		fn      func(*Box) error
		wantErr error
	}{
		{"fn error aborts", func(b *Box) error { b.Status = "broken"; return errBoom }, errBoom},
		{"id is immutable", func(b *Box) error { b.ID = "id9"; return nil }, errdefs.ErrInvalidArgument},
		{"created_at is immutable", func(b *Box) error { b.CreatedAt = time.Now(); return nil }, errdefs.ErrInvalidArgument},
		{"name taken", func(b *Box) error { b.Name = "two"; b.Status = "broken"; return nil }, errdefs.ErrAlreadyExists},
		{"changes", func(b *Box) error {
			b.Name, b.Status, b.PID, b.StartedAt = "uno", "running", 7, created.Add(time.Minute)
			b.Labels = map[string]string{"k": "v"}
			return nil
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := db.GetBox(ctx, "id1")
			if err != nil {
				t.Fatal(err)
			}
			got, err := db.UpdateBox(ctx, "id1", tc.fn)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("UpdateBox = %v, want %v", err, tc.wantErr)
			}
			after, err := db.GetBox(ctx, "id1")
			if err != nil {
				t.Fatal(err)
			}
			want := before
			if tc.wantErr == nil {
				tc.fn(&want)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("UpdateBox returned %+v, want %+v", got, want)
				}
			}
			if !reflect.DeepEqual(after, want) {
				t.Fatalf("stored %+v, want %+v", after, want)
			}
		})
	}
}

// counter is what the concurrency tests store in Box.Config.
type counter struct{ N int }

func increment(b *Box) error {
	var c counter
	if len(b.Config) > 0 {
		if err := json.Unmarshal(b.Config, &c); err != nil {
			return err
		}
	}
	c.N++
	var err error
	b.Config, err = json.Marshal(c)
	return err
}

func readCounter(t *testing.T, db *DB, id string) int {
	t.Helper()
	b, err := db.GetBox(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var c counter
	if err := json.Unmarshal(b.Config, &c); err != nil {
		t.Fatal(err)
	}
	return c.N
}

func TestUpdateBoxConcurrent(t *testing.T) {
	const workers, rounds = 20, 5
	for _, tc := range []struct {
		name    string
		handles int // DB handles the workers share, round-robin
	}{
		{"one handle", 1},
		{"a handle per goroutine", workers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			dbs := make([]*DB, tc.handles)
			for i := range dbs {
				dbs[i] = openTest(t, home)
			}
			if err := dbs[0].CreateBox(t.Context(), testBox("ctr", "", time.Time{})); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i := range workers {
				wg.Go(func() {
					for range rounds {
						if _, err := dbs[i%len(dbs)].UpdateBox(t.Context(), "ctr", increment); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if got := readCounter(t, dbs[0], "ctr"); got != workers*rounds {
				t.Fatalf("counter = %d, want %d", got, workers*rounds)
			}
		})
	}
}

const helperEnv = "BOXLITE_STORE_HELPER" // "<home> <process number>"

// TestHelperProcess is one of TestMultiProcess's processes, not a test.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process of TestMultiProcess")
	}
	home, n, _ := strings.Cut(spec, " ")
	db := openTest(t, home) // concurrently with the other processes, on a fresh home
	ctx := t.Context()
	if err := db.CreateBox(ctx, testBox("shared", "", time.Time{})); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for j := range 25 {
		wg.Go(func() {
			id := fmt.Sprintf("p%s-%02d", n, j)
			if err := db.CreateBox(ctx, testBox(id, "name-"+id, time.Time{})); err != nil {
				t.Error(err)
				return
			}
			if _, err := db.UpdateBox(ctx, id, func(b *Box) error {
				b.Status, b.PID, b.StartedAt = "running", os.Getpid(), time.Now()
				return nil
			}); err != nil {
				t.Error(err)
			}
			if _, err := db.UpdateBox(ctx, "shared", increment); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestMultiProcess(t *testing.T) {
	const procs = 4
	home := t.TempDir()
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+home+" "+strconv.Itoa(i))
			out, err := cmd.CombinedOutput()
			if err != nil || strings.Contains(string(out), "locked") {
				t.Errorf("process %d: %v\n%s", i, err, out)
			}
		})
	}
	wg.Wait()

	db := openTest(t, home)
	boxes, err := db.ListBoxes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, b := range boxes {
		if strings.HasPrefix(b.ID, "p") && b.Status == "running" && b.PID != 0 && !b.StartedAt.IsZero() {
			running++
		}
	}
	if len(boxes) != procs*25+1 || running != procs*25 {
		t.Fatalf("%d boxes, %d of them running; want %d and %d", len(boxes), running, procs*25+1, procs*25)
	}
	if got := readCounter(t, db, "shared"); got != procs*25 {
		t.Fatalf("shared counter = %d, want %d", got, procs*25)
	}
}

func TestReopenKeepsData(t *testing.T) {
	home := t.TempDir()
	ctx := t.Context()
	db, err := Open(ctx, Layout{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	want := testBox("keep", "kept", time.Date(2024, 2, 29, 23, 59, 59, 999999999, time.UTC))
	if err := db.CreateBox(ctx, want); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTest(t, home)
	got, err := db.GetBox(ctx, "kept")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen: %+v, %v; want %+v", got, err, want)
	}
	var mode string
	if err := db.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	home := t.TempDir()
	db := openTest(t, home)
	if _, err := db.db.ExecContext(t.Context(),
		`UPDATE meta SET value = ? WHERE key = 'schema_version'`, strconv.Itoa(len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(t.Context(), Layout{Home: home})
	t.Log(err)
	if !errors.Is(err, errdefs.ErrInvalidState) || !strings.Contains(err.Error(), "newer boxlite") {
		t.Fatalf("Open = %v, want ErrInvalidState about a newer boxlite", err)
	}
}

func TestOpenUnwritable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dbIsDir := filepath.Join(dir, "home")
	if err := os.MkdirAll(Layout{Home: dbIsDir}.Database(), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, home string }{
		{"home under a file", filepath.Join(file, "home")},
		{"database is a directory", dbIsDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Layout{Home: tc.home}
			db, err := Open(t.Context(), l)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), l.Database()) {
				t.Fatalf("Open = %v, want the path %s in it", err, l.Database())
			}
		})
	}
}
