package client

import (
	"io"
	"sync"
)

// buffer is an in-memory pipe whose writer never blocks: writes append to
// an unbounded queue that readers drain. It is how process output flows
// from the gRPC stream to the caller.
type buffer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	err    error // set once the writer is done; io.EOF for a clean end
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
	b.chunks = append(b.chunks, p)
	b.mu.Unlock()
	b.cond.Broadcast()
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
	for len(b.chunks) == 0 && b.err == nil {
		b.cond.Wait()
	}
	if len(b.chunks) == 0 {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) && len(b.chunks) > 0 {
		c := copy(p[n:], b.chunks[0])
		n += c
		if c == len(b.chunks[0]) {
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
		} else {
			b.chunks[0] = b.chunks[0][c:]
		}
	}
	return n, nil
}
