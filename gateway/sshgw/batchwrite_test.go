package sshgw

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// Packets of every size, written one after another as x/crypto does,
// arrive whole and in order.
func TestBatchConnDeliversInOrder(t *testing.T) {
	a, peer := tcpPair(t)
	b := newBatchConn(a)
	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(peer)
		got <- data
	}()
	want := sha256.New()
	rng := rand.New(rand.NewPCG(1, 2))
	total := 0
	for total < 16<<20 {
		p := make([]byte, 1+rng.IntN(40<<10))
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if n, err := b.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		want.Write(p)
		total += len(p)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	data := <-got
	if len(data) != total {
		t.Fatalf("peer read %d bytes, want %d", len(data), total)
	}
	sum := sha256.Sum256(data)
	if !bytes.Equal(sum[:], want.Sum(nil)) {
		t.Fatal("the peer read other bytes than were written, or in another order")
	}
	if _, err := b.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
	if b.held != nil || b.writing {
		t.Fatal("a closed connection kept its buffer or its writer")
	}
}

// The last packets (exit status, channel close) are not lost when the
// connection is closed right after them: Close lets them out first.
func TestBatchConnFlushesOnClose(t *testing.T) {
	a, peer := tcpPair(t)
	b := newBatchConn(a)
	// Less than batchMax, so no write waits, while the peer, which starts
	// reading only when Close is called, leaves some of it held.
	msg := bytes.Repeat([]byte("exit-status 0\n"), (batchMax-1)/14)
	for off := 0; off < len(msg); off += 1000 {
		if _, err := b.Write(msg[off:min(off+1000, len(msg))]); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(peer)
		got <- data
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if data := <-got; !bytes.Equal(data, msg) {
		t.Fatalf("the peer read %d bytes of %d before the close", len(data), len(msg))
	}
}

// A peer that stops reading: writes wait once batchMax is held (memory
// stays bounded), and Close gives up after closeWait instead of hanging.
func TestBatchConnBoundedAgainstAStuckPeer(t *testing.T) {
	a, _ := tcpPair(t) // the peer never reads
	b := newBatchConn(a)
	b.closeWait = 50 * time.Millisecond
	wrote := make(chan int, 1)
	go func() {
		p := make([]byte, 32<<10)
		n := 0
		for {
			if _, err := b.Write(p); err != nil {
				wrote <- n
				return
			}
			n += len(p)
		}
	}()
	// Wait until the writer is held up: socket buffers full, batchMax held.
	for {
		b.mu.Lock()
		full := b.held != nil && len(*b.held)+32<<10 > batchMax
		b.mu.Unlock()
		if full {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hung on a peer that does not read")
	}
	n := <-wrote
	if n == 0 {
		t.Fatal("nothing was written before the peer stalled")
	}
}

// After a write fails (the peer is gone), later writes report it.
func TestBatchConnReportsWriteErrors(t *testing.T) {
	a, peer := tcpPair(t)
	b := newBatchConn(a)
	peer.Close()
	p := make([]byte, 32<<10)
	var err error
	for i := 0; i < 10000 && err == nil; i++ {
		_, err = b.Write(p)
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a closed peer never failed")
	}
	b.Close()
}
