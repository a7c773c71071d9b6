package vnet

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openAudit(t *testing.T, path string, maxBytes int64) *AuditLog {
	t.Helper()
	l, err := OpenAudit(path, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func readAudit(t *testing.T, path string) []Event {
	t.Helper()
	events, err := ReadAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func TestAuditRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.log")
	l := openAudit(t, path, 0)
	when := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	in := []Event{
		{Time: when, Proto: "tcp", Dst: "203.0.113.7:443", Host: "api.example.com", Allow: true, Reason: "rule api.example.com"},
		{Time: when, Proto: "dns", Host: "evil.example", Reason: "not listed"},
		{Time: when, Proto: "udp", Dst: "169.254.169.254:53", Reason: "metadata"},
	}
	for _, e := range in {
		l.Record(e)
	}
	before := time.Now()
	l.Record(Event{Proto: "tcp", Dst: "10.0.0.1:22", Allow: true, Reason: "rule 10.0.0.0/8"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Proto: "tcp"}) // dropped, no panic

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), raw)
	}
	const first = `{"time":"2025-01-02T03:04:05.000000006Z","proto":"tcp","dst":"203.0.113.7:443","host":"api.example.com","allow":true,"reason":"rule api.example.com"}`
	if lines[0] != first {
		t.Errorf("line 1 = %s\nwant      %s", lines[0], first)
	}
	const dnsLine = `{"time":"2025-01-02T03:04:05.000000006Z","proto":"dns","host":"evil.example","allow":false,"reason":"not listed"}`
	if lines[1] != dnsLine {
		t.Errorf("line 2 = %s\nwant      %s", lines[1], dnsLine)
	}

	got := readAudit(t, path)
	if len(got) != 4 {
		t.Fatalf("ReadAudit: %d events, want 4", len(got))
	}
	for i, e := range in {
		if !got[i].Time.Equal(e.Time) {
			t.Errorf("event %d time %v, want %v", i, got[i].Time, e.Time)
		}
		got[i].Time = e.Time
		if got[i] != e {
			t.Errorf("event %d = %+v, want %+v", i, got[i], e)
		}
	}
	if got[3].Time.Before(before.Add(-time.Second)) || got[3].Time.After(time.Now()) {
		t.Errorf("a zero time was recorded as %v", got[3].Time)
	}
}

func TestAuditRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.log")
	event := func(i int) Event {
		return Event{Time: time.Unix(int64(i), 0).UTC(), Proto: "tcp", Dst: fmt.Sprintf("203.0.113.7:%05d", i), Reason: "not listed"}
	}
	line, _ := json.Marshal(event(0))
	lineLen := int64(len(line) + 1)
	maxBytes := 3*lineLen + lineLen/2 // three lines per file

	l := openAudit(t, path, maxBytes)
	for i := range 10 {
		l.Record(event(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > maxBytes {
			t.Errorf("%s: %d bytes, more than %d", p, fi.Size(), maxBytes)
		}
	}
	// 0-2, 3-5 rotated away and replaced; 6-8 in .1; 9 in the log.
	got := readAudit(t, path)
	var ports []string
	for _, e := range got {
		ports = append(ports, e.Dst[len(e.Dst)-1:])
	}
	if strings.Join(ports, "") != "6789" {
		t.Errorf("events after rotation: %q, want 6 to 9", ports)
	}

	// Reopening continues the current file and its size.
	l = openAudit(t, path, maxBytes)
	l.Record(event(10))
	l.Record(event(11))
	l.Record(event(12))
	l.Close()
	if got := readAudit(t, path); len(got) != 4 || got[0].Dst != event(9).Dst || got[3].Dst != event(12).Dst {
		t.Errorf("after reopening: %+v", got)
	}
}

func TestAuditOversizedLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.log")
	l := openAudit(t, path, 10)
	l.Record(Event{Proto: "tcp", Host: strings.Repeat("a", 100)})
	l.Record(Event{Proto: "tcp", Host: "b"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAudit(t, path)
	if len(got) != 2 || got[1].Host != "b" {
		t.Errorf("events: %+v", got)
	}
}

func TestAuditConcurrent(t *testing.T) {
	for _, maxBytes := range []int64{0, 4096} {
		t.Run(fmt.Sprint(maxBytes), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "egress.log")
			l := openAudit(t, path, maxBytes)
			const writers, each = 8, 200
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						l.Record(Event{Proto: "tcp", Dst: fmt.Sprintf("10.0.%d.%d:80", w, i), Allow: i%2 == 0, Reason: "test"})
					}
				})
			}
			// A reader alongside the writers sees only whole events.
			wg.Go(func() {
				for range 20 {
					if _, err := ReadAudit(path); err != nil {
						t.Error(err)
						return
					}
				}
			})
			wg.Wait()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got := readAudit(t, path)
			if maxBytes == 0 && len(got) != writers*each {
				t.Fatalf("%d events, want %d", len(got), writers*each)
			}
			if maxBytes > 0 && (len(got) == 0 || len(got) >= writers*each) {
				t.Fatalf("%d events after rotation", len(got))
			}
			seen := map[string]bool{}
			for _, e := range got {
				if e.Proto != "tcp" || e.Reason != "test" || seen[e.Dst] {
					t.Fatalf("bad or repeated event %+v", e)
				}
				seen[e.Dst] = true
			}
		})
	}
}

func TestAuditTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.log")
	whole := `{"time":"2025-01-02T03:04:05Z","proto":"dns","host":"a.example","allow":true,"reason":"open"}` + "\n"
	torn := `{"time":"2025-01-02T03:04:06Z","proto":"tc`
	if err := os.WriteFile(path+".1", []byte(whole+torn), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(whole+torn), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readAudit(t, path); len(got) != 2 || got[0].Host != "a.example" || got[1].Host != "a.example" {
		t.Fatalf("events with torn lines: %+v", got)
	}

	// Opening cuts the torn line off, so the next event starts a line.
	l := openAudit(t, path, 0)
	l.Record(Event{Proto: "tcp", Host: "b.example"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAudit(t, path)
	if len(got) != 3 || got[2].Host != "b.example" {
		t.Fatalf("events after reopening: %+v", got)
	}

	// A file holding only a torn line is emptied.
	only := filepath.Join(t.TempDir(), "only.log")
	if err := os.WriteFile(only, []byte(strings.Repeat("x", 10000)), 0o600); err != nil {
		t.Fatal(err)
	}
	l = openAudit(t, only, 0)
	l.Close()
	if fi, err := os.Stat(only); err != nil || fi.Size() != 0 {
		t.Fatalf("torn-only file: %v, %v", fi, err)
	}
}

func TestReadAuditErrors(t *testing.T) {
	dir := t.TempDir()
	if got, err := ReadAudit(filepath.Join(dir, "missing.log")); err != nil || len(got) != 0 {
		t.Errorf("missing log: %v, %v", got, err)
	}
	bad := filepath.Join(dir, "bad.log")
	if err := os.WriteFile(bad, []byte("{\"proto\":\"tcp\"}\nnot json\n{\"proto\":\"udp\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadAudit(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("corrupt line: err = %v, want it to name line 2", err)
	}
}
