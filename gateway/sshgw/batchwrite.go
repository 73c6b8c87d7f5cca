package sshgw

import (
	"net"
	"sync"
	"time"
)

const (
	// batchMax is how many bytes a connection holds for the kernel before
	// its writer waits.
	batchMax = 256 << 10
	// batchCloseWait bounds how long Close waits for held bytes to reach a
	// peer that does not read.
	batchCloseWait = 5 * time.Second
)

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, batchMax); return &b }}

// batchConn hands writes to the kernel from a goroutine of its own, which
// runs only while bytes are held: x/crypto writes and flushes each SSH
// packet with its own system call and waits for it. With batchConn the
// packet's writer goes on to encrypt the next packet meanwhile, and the
// packets that arrive while a system call is under way leave in the next
// one together. A write error is returned by the writes after it; Close
// first lets held bytes out (at most batchCloseWait), so the last packets
// (exit status, channel close) are not lost.
type batchConn struct {
	net.Conn

	closeWait time.Duration // batchCloseWait; shorter in tests

	mu      sync.Mutex
	cond    sync.Cond
	held    *[]byte // bytes waiting for the writer goroutine
	writing bool    // the writer goroutine runs
	err     error   // the first write error
	closed  bool
}

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, closeWait: batchCloseWait}
	b.cond.L = &b.mu
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && !b.closed && b.held != nil && len(*b.held) > 0 && len(*b.held)+len(p) > batchMax {
		b.cond.Wait()
	}
	switch {
	case b.err != nil:
		return 0, b.err
	case b.closed:
		return 0, net.ErrClosed
	}
	if b.held == nil {
		b.held = batchBufs.Get().(*[]byte)
	}
	*b.held = append(*b.held, p...)
	if !b.writing {
		b.writing = true
		go b.writeLoop()
	}
	return len(p), nil
}

// writeLoop writes what is held until nothing is, then gives its buffers
// back and ends.
func (b *batchConn) writeLoop() {
	var out *[]byte
	b.mu.Lock()
	for b.err == nil && b.held != nil && len(*b.held) > 0 {
		out, b.held = b.held, out
		b.cond.Broadcast()
		b.mu.Unlock()
		_, err := b.Conn.Write(*out)
		*out = (*out)[:0]
		b.mu.Lock()
		if err != nil && b.err == nil {
			b.err = err
		}
	}
	if out != nil {
		batchBufs.Put(out)
	}
	if b.held != nil {
		*b.held = (*b.held)[:0]
		batchBufs.Put(b.held)
		b.held = nil
	}
	b.writing = false
	b.cond.Broadcast()
	b.mu.Unlock()
}

// Close lets held bytes out, then closes the connection.
func (b *batchConn) Close() error {
	b.mu.Lock()
	b.closed = true
	if b.writing {
		_ = b.Conn.SetWriteDeadline(time.Now().Add(b.closeWait))
		for b.writing {
			b.cond.Wait()
		}
	}
	b.mu.Unlock()
	return b.Conn.Close()
}
