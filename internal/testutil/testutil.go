package testutil

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// Poll is how often Eventually checks its condition.
const Poll = 10 * time.Millisecond

// Eventually calls cond every Poll until it reports true, and fails the
// test with "timed out after d waiting for what" if d passes first.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(Poll)
	}
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent
// readers: the log or output of a server under test.
type SyncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Len returns how many bytes were written so far.
func (s *SyncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// ServeTCP listens on addr ("127.0.0.1:0" for any free port) and serves
// every connection with handle in its own goroutine, closing it when handle
// returns. It returns the listening address. At the end of the test the
// listener closes and ServeTCP waits for every handler.
func ServeTCP(t testing.TB, addr string, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

// ServeLine answers every connection on addr with reply and closes it.
func ServeLine(t testing.TB, addr, reply string) string {
	t.Helper()
	return ServeTCP(t, addr, func(c net.Conn) { _, _ = c.Write([]byte(reply)) })
}
