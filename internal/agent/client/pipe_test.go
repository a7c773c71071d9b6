package client

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
)

// TestBufferSpills writes far more than memLimit to a buffer nobody reads
// yet, then reads it back: same bytes, same order, and the spill file is
// gone once drained.
func TestBufferSpills(t *testing.T) {
	old := memLimit
	memLimit = 1 << 10
	defer func() { memLimit = old }()

	b := newBuffer()
	var want bytes.Buffer
	for i := range 2000 {
		chunk := []byte(fmt.Sprintf("line %d\n", i))
		want.Write(chunk)
		b.write(chunk)
	}
	b.mu.Lock()
	spilled, inMem := b.spill != nil, b.mem
	b.mu.Unlock()
	if !spilled || inMem > memLimit {
		t.Fatalf("spill %v, %d bytes in memory (limit %d)", spilled, inMem, memLimit)
	}
	// Read part, write more (it must queue behind the spilled data).
	head := make([]byte, 5000)
	if _, err := io.ReadFull(b, head); err != nil {
		t.Fatal(err)
	}
	tail := []byte("the end\n")
	want.Write(tail)
	b.write(tail)
	b.close(nil)
	rest, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes, want %d; order or content differs", len(got), want.Len())
	}
	if b.spill != nil {
		t.Fatal("spill file still open after the buffer was drained")
	}
}

// TestBufferConcurrent interleaves a writer and a reader across the
// memory/file boundary many times.
func TestBufferConcurrent(t *testing.T) {
	old := memLimit
	memLimit = 256
	defer func() { memLimit = old }()

	b := newBuffer()
	var want bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 5000 {
			chunk := []byte(fmt.Sprintf("%d,", i))
			b.write(chunk)
		}
		b.close(nil)
	}()
	for i := range 5000 {
		fmt.Fprintf(&want, "%d,", i)
	}
	var got bytes.Buffer
	buf := make([]byte, 37)
	for {
		n, err := b.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d", got.Len(), want.Len())
	}
}
