package client

import (
	"io"
	"os"
	"runtime"
	"sync"
)

// memLimit is how much unread output a stream keeps in memory; beyond it
// the output spills to an unlinked temporary file, so a caller that never
// reads a chatty process's output costs disk, not the host's memory.
var memLimit = 8 << 20

// buffer is a pipe whose writer never blocks: writes append to a queue
// that readers drain, in memory up to memLimit and in a temporary file
// beyond. It is how process output flows from the gRPC stream to the
// caller.
type buffer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte // oldest data, in memory
	mem    int      // bytes in chunks
	// spill holds the data written after memory filled up, at
	// [rOff, wOff); while it exists every write goes there, so order
	// is kept. It goes away once drained.
	spill      *os.File
	rOff, wOff int64
	err        error // set once the writer is done; io.EOF for a clean end
}

func newBuffer() *buffer {
	b := &buffer{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *buffer) write(p []byte) {
	if len(p) == 0 {
		return
	}
	b.mu.Lock()
	defer b.cond.Broadcast()
	defer b.mu.Unlock()
	if b.spill == nil && b.mem+len(p) > memLimit {
		b.startSpill()
	}
	if b.spill != nil {
		if _, err := b.spill.WriteAt(p, b.wOff); err == nil {
			b.wOff += int64(len(p))
			return
		}
		if b.rOff < b.wOff {
			// The file failed with data still in it: later data
			// cannot jump ahead of it. Drop this chunk, tell the reader.
			b.err = io.ErrShortWrite
			return
		}
		b.dropSpill()
	}
	b.chunks = append(b.chunks, p)
	b.mem += len(p)
}

// startSpill opens the spill file; on failure output stays in memory.
func (b *buffer) startSpill() {
	f, err := os.CreateTemp("", "boxlite-output-")
	if err != nil {
		return
	}
	os.Remove(f.Name())
	b.spill, b.rOff, b.wOff = f, 0, 0
	// A caller may never read nor drain the stream: close the file with
	// the buffer.
	runtime.AddCleanup(b, func(f *os.File) { f.Close() }, f)
}

func (b *buffer) dropSpill() {
	b.spill.Close()
	b.spill, b.rOff, b.wOff = nil, 0, 0
}

// close ends the stream; readers get err (io.EOF when nil) after the
// buffered data.
func (b *buffer) close(err error) {
	if err == nil {
		err = io.EOF
	}
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *buffer) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.chunks) == 0 && (b.spill == nil || b.rOff == b.wOff) && b.err == nil {
		b.cond.Wait()
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) && len(b.chunks) > 0 {
		c := copy(p[n:], b.chunks[0])
		n += c
		b.mem -= c
		if c == len(b.chunks[0]) {
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
		} else {
			b.chunks[0] = b.chunks[0][c:]
		}
	}
	if n < len(p) && b.spill != nil && b.rOff < b.wOff {
		want := min(int64(len(p)-n), b.wOff-b.rOff)
		c, err := b.spill.ReadAt(p[n:n+int(want)], b.rOff)
		n += c
		b.rOff += int64(c)
		if err != nil && c == 0 {
			b.err = err
		}
		if b.rOff == b.wOff {
			b.dropSpill() // drained: back to memory
		}
	}
	if n == 0 {
		return 0, b.err
	}
	return n, nil
}
