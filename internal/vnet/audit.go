package vnet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// Event is one egress decision: a connection or a DNS query the box made.
type Event struct {
	Time time.Time `json:"time"`
	// Proto is "tcp", "udp" or "dns".
	Proto string `json:"proto"`
	// Dst is the real destination, "ip:port"; "" for dns.
	Dst string `json:"dst,omitempty"`
	// Host is the name the box used, when known.
	Host  string `json:"host,omitempty"`
	Allow bool   `json:"allow"`
	// Reason is short: "not listed", "metadata", "rule 10.0.0.0/8", ...
	Reason string `json:"reason,omitempty"`
}

// AuditLog is a box's egress audit log: one JSON Event per line. When the
// file would grow beyond its size limit it is renamed to path+".1",
// replacing the previous one, and a new file is begun, so the log holds at
// most about twice the limit. Its methods are safe for concurrent use.
type AuditLog struct {
	path     string
	maxBytes int64

	mu   sync.Mutex
	f    *os.File
	size int64
	err  error // the first write error, returned by Close
}

// OpenAudit opens the audit log at path for appending, creating it if
// needed. maxBytes <= 0 never rotates. A line torn by a crash at the end
// of the file is cut off.
func OpenAudit(path string, maxBytes int64) (*AuditLog, error) {
	f, size, err := openAuditFile(path)
	if err != nil {
		return nil, err
	}
	return &AuditLog{path: path, maxBytes: maxBytes, f: f, size: size}, nil
}

func openAuditFile(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("audit log: %w", err)
	}
	size, err := cutTornLine(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("audit log %s: %w", path, err)
	}
	return f, size, nil
}

// cutTornLine truncates f after its last newline and returns its size.
func cutTornLine(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end := fi.Size()
	buf := make([]byte, 4096)
	for off := end; off > 0; {
		n := min(int64(len(buf)), off)
		off -= n
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			keep := off + int64(i) + 1
			if keep == end {
				return end, nil
			}
			return keep, f.Truncate(keep)
		}
	}
	return 0, f.Truncate(0)
}

// Record appends e, with the current time if e.Time is zero. A write
// error is kept for Close; the events after it are dropped.
func (l *AuditLog) Record(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	line, err := json.Marshal(e)
	if err != nil {
		return // cannot happen: Event holds only strings, a bool and a time
	}
	line = append(line, '\n')

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil || l.err != nil {
		return
	}
	if l.maxBytes > 0 && l.size > 0 && l.size+int64(len(line)) > l.maxBytes {
		if l.err = l.rotate(); l.err != nil {
			return
		}
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	if err != nil {
		l.err = fmt.Errorf("audit log %s: %w", l.path, err)
	}
}

// rotate renames the log to path+".1" and begins a new one.
func (l *AuditLog) rotate() error {
	if err := l.f.Close(); err != nil {
		l.f = nil
		return fmt.Errorf("audit log %s: %w", l.path, err)
	}
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("audit log: rotate: %w", err)
	}
	f, size, err := openAuditFile(l.path)
	if err != nil {
		return err
	}
	l.f, l.size = f, size
	return nil
}

// Close closes the log and returns the first error Record met.
func (l *AuditLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		if err := l.f.Close(); err != nil && l.err == nil {
			l.err = fmt.Errorf("audit log %s: %w", l.path, err)
		}
		l.f = nil
	}
	return l.err
}

// ReadAudit returns the events of the audit log at path, oldest first:
// those of path+".1", then those of path. A torn last line (one being
// written, or cut by a crash) is skipped; missing files hold no events.
func ReadAudit(path string) ([]Event, error) {
	var events []Event
	for _, p := range []string{path + ".1", path} {
		var err error
		if events, err = readAuditFile(p, events); err != nil {
			return nil, err
		}
	}
	return events, nil
}

func readAuditFile(path string, events []Event) ([]Event, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return events, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return events, nil // a torn last line, or none
		}
		if err != nil {
			return nil, fmt.Errorf("audit log %s: %w", path, err)
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("audit log %s: line %d: %w", path, n, err)
		}
		events = append(events, e)
	}
}
