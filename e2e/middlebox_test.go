package e2e

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// middlebox is a TCP relay standing between two peers, like a load
// balancer or NAT: it drops a connection that carried nothing in either
// direction for idle (0: never), and cut drops everything at once and
// refuses new connections, as a VM that died would.
type middlebox struct {
	ln     net.Listener
	target string
	idle   time.Duration

	mu     sync.Mutex // protects conns and cutOff
	conns  map[net.Conn]struct{}
	cutOff bool
	wg     sync.WaitGroup
	drops  atomic.Int64 // connections dropped for idleness
}

func newMiddlebox(t *testing.T, listen, target string, idle time.Duration) *middlebox {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	m := &middlebox{ln: ln, target: target, idle: idle, conns: map[net.Conn]struct{}{}}
	m.wg.Add(1)
	go m.serve()
	t.Cleanup(m.cut)
	return m
}

func (m *middlebox) addr() string { return m.ln.Addr().String() }

func (m *middlebox) serve() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.relay(c) }()
	}
}

func (m *middlebox) track(cs ...net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cutOff {
		return false
	}
	for _, c := range cs {
		m.conns[c] = struct{}{}
	}
	return true
}

func (m *middlebox) relay(a net.Conn) {
	b, err := net.DialTimeout("tcp", m.target, 5*time.Second)
	if err != nil {
		a.Close()
		return
	}
	if !m.track(a, b) {
		a.Close()
		b.Close()
		return
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	pump := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				if _, err := dst.Write(buf[:n]); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		a.Close()
		b.Close()
	}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); pump(b, a) }()
	go func() { defer pumps.Done(); pump(a, b) }()
	go func() { pumps.Wait(); close(done) }()
	if m.idle > 0 {
		tick := time.NewTicker(m.idle / 10)
		defer tick.Stop()
	loop:
		for {
			select {
			case <-done:
				break loop
			case <-tick.C:
				if time.Since(time.Unix(0, last.Load())) > m.idle {
					m.drops.Add(1)
					a.Close()
					b.Close()
				}
			}
		}
	}
	<-done
	m.mu.Lock()
	delete(m.conns, a)
	delete(m.conns, b)
	m.mu.Unlock()
}

// cut drops every connection and stops listening.
func (m *middlebox) cut() {
	m.mu.Lock()
	m.cutOff = true
	m.ln.Close()
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}
