package sshgw

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testutil"
)

// stuckNode is a raw SSH node that trusts the CA, never answers global
// requests (keepalives included), and runs every exec as "print ok, exit 0"
// — or, for "wait", holds the channel open until the client closes it.
func stuckNode(t *testing.T, ca ssh.PublicKey) string {
	t.Helper()
	hk, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), "stuck")
	if err != nil {
		t.Fatal(err)
	}
	checker := &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), ca.Marshal()) }}
	cfg := &ssh.ServerConfig{PublicKeyCallback: checker.Authenticate}
	cfg.AddHostKey(hk)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				var held []*ssh.Request
				wg.Add(1)
				go func() { // never replies
					defer wg.Done()
					for r := range reqs {
						held = append(held, r)
					}
				}()
				for ch := range chans {
					c, creqs, err := ch.Accept()
					if err != nil {
						continue
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						for r := range creqs {
							if r.Type == "stuck@test" {
								continue // never answered
							}
							_ = r.Reply(r.Type == "exec", nil)
							if r.Type == "exec" && !strings.Contains(string(r.Payload), "wait") {
								_, _ = c.Write([]byte("ok\n"))
								_, _ = c.SendRequest("exit-status", false, []byte{0, 0, 0, 0})
								c.Close()
							}
						}
					}()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestStuckPeerDoesNotStallConnection: a node that never answers one
// channel's request must not freeze the user's other channels, however
// many requests pile up behind it.
func TestStuckPeerDoesNotStallConnection(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.KeepaliveInterval = -1 }, func(ca ssh.PublicKey) string { return stuckNode(t, ca) })
	c := dialAs(t, g.addr, "alice", g.userKey)
	defer c.Close()
	ch, _, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	go func() { _, _ = ch.SendRequest("stuck@test", true, nil) }()
	time.Sleep(50 * time.Millisecond)
	for i := 0; i < 50; i++ { // x/crypto buffers 16 before its read loop stops
		if _, err := ch.SendRequest("note@test", false, nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		s, err := c.NewSession()
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		out, err := s.Output("hello")
		if err == nil && string(out) != "ok\n" {
			err = errors.New("output " + string(out))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a session could not run while global requests were stuck at the node")
	}
}

// TestKeepaliveDetectsDeadNode: a node that stops answering keepalives is
// taken as dead; the user's open session is told and closed.
func TestKeepaliveDetectsDeadNode(t *testing.T) {
	g := newTestGW(t, func(c *Config) {
		c.KeepaliveInterval = 50 * time.Millisecond
		c.KeepaliveCountMax = 2
	}, func(ca ssh.PublicKey) string { return stuckNode(t, ca) })
	c := dialAs(t, g.addr, "alice", g.userKey)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testutil.SyncBuffer
	s.Stderr = &stderr
	start := time.Now()
	err = s.Run("wait")
	if !strings.Contains(stderr.String(), "poolgate: node n1 stopped responding; closing this connection.") {
		t.Fatalf("session ended (%v) after %s with stderr %q", err, time.Since(start), stderr.String())
	}
}

// TestGlobalRequestsFromNode: the node's global requests reach the client,
// except hostkeys-00@openssh.com, which would teach the client the node's
// host keys as the gateway's.
func TestGlobalRequestsFromNode(t *testing.T) {
	g := newTestGW(t, nil)
	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
		User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	go func() {
		for r := range reqs {
			got <- r.Type
		}
		close(got)
	}()
	none := make(chan *ssh.Request)
	close(none) // requests are read above; the client needs a stream that ends
	c := ssh.NewClient(conn, chans, none)
	s, _ := c.NewSession()
	if err := s.Run("globals"); err != nil {
		t.Fatal(err)
	}
	select {
	case typ := <-got:
		if typ != "example@poolgate.test" {
			t.Fatalf("first global request to reach the client: %s", typ)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the node's global request never reached the client")
	}
	c.Close()
	for typ := range got {
		t.Errorf("also reached the client: %s", typ)
	}
}

// TestGatewayAnswersKeepalives: a client's keepalive is answered by the
// gateway itself, even while the node answers nothing.
func TestGatewayAnswersKeepalives(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.KeepaliveInterval = -1 }, func(ca ssh.PublicKey) string { return stuckNode(t, ca) })
	c := dialAs(t, g.addr, "alice", g.userKey)
	defer c.Close()
	done := make(chan error, 1)
	go func() { _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("keepalive unanswered: it went to the node")
	}
}

// TestLoginGraceTime: a connection that does not finish logging in within
// login_grace_time is closed.
func TestLoginGraceTime(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.LoginGraceTime = 300 * time.Millisecond })
	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("connection not closed by the gateway: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	c := dialAs(t, g.addr, "alice", g.userKey)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testutil.SyncBuffer
	s.Stderr = &stderr
	in, _ := s.StdinPipe()
	defer in.Close()
	if err := s.Start("cat"); err != nil {
		t.Fatal(err)
	}
	_ = s.Wait()
	if !strings.Contains(stderr.String(), "after 200ms without activity") {
		t.Fatalf("idle session: stderr %q", stderr.String())
	}
	if err := c.Wait(); err == nil {
		t.Fatal("connection still open")
	}
}

func TestMaxSessionsPerUser(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.MaxSessionsPerUser = 1 })
	first := dialAs(t, g.addr, "alice", g.userKey)
	defer first.Close()
	var banner string
	_, err := ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
		User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		BannerCallback:  func(m string) error { banner += m; return nil },
	})
	if err == nil || !strings.Contains(banner, "you already have 1 connections open") {
		t.Fatalf("second connection: err %v, banner %q", err, banner)
	}
	bob := dialAs(t, g.addr, "bob", g.userKey) // others unaffected
	bob.Close()
}

func TestUnauthenticatedCap(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.MaxUnauthenticated = 2 })
	var idle []net.Conn
	for i := 0; i < 2; i++ {
		nc, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		buf := make([]byte, 64) // wait for the server's version line: the slot is taken
		if _, err := nc.Read(buf); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, nc)
	}
	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(nc)
	if !strings.Contains(string(got), "too many connections are logging in") {
		t.Fatalf("third connection read %q", got)
	}
	for _, c := range idle {
		c.Close()
	}
}

func TestFailoverToNextNode(t *testing.T) {
	dead := func(ssh.PublicKey) string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close() // nothing listens: connections are refused
		return addr
	}
	g := newTestGW(t, nil, dead, func(ca ssh.PublicKey) string { return testNode(t, ca) })
	// Pin alice to the dead node (n1), as if she had been there before.
	l, err := g.bal.Acquire("alice", "ssh", "", "n2")
	if err != nil || l.Node().Name != "n1" {
		t.Fatalf("pinning alice to n1: %v %v", l, err)
	}
	l.Release()
	var banner string
	c, err := ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
		User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		BannerCallback:  func(m string) error { banner += m; return nil },
	})
	if err != nil {
		t.Fatalf("alice with n1 unreachable: %v (banner %q)", err, banner)
	}
	defer c.Close()
	if !strings.Contains(banner, "node n1, where your sessions ran, is no longer available; you are now on node n2") {
		t.Fatalf("banner %q", banner)
	}
	for _, u := range []string{"bob", "carol"} { // new users too, whichever node they draw
		dialAs(t, g.addr, u, g.userKey).Close()
	}
}

func TestShutdownTellsUsers(t *testing.T) {
	g := newTestGW(t, nil)
	c := dialAs(t, g.addr, "alice", g.userKey)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testutil.SyncBuffer
	s.Stderr = &stderr
	in, _ := s.StdinPipe()
	defer in.Close()
	if err := s.Start("cat"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := g.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a session open: %v", err)
	}
	_ = s.Wait()
	got := stderr.String()
	if !strings.Contains(got, "the gateway is shutting down; this connection will be closed in") ||
		!strings.Contains(got, "the gateway is shutting down now.") || strings.Contains(got, "closed in 0s") {
		t.Fatalf("stderr %q", got)
	}
	if _, err := net.DialTimeout("tcp", g.addr, time.Second); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestBackoff(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBackoff(BackoffConfig{After: 2, Delay: 100 * time.Millisecond, MaxDelay: time.Second, Forget: time.Minute, Allow: []string{"10.0.0.0/8"}},
		func() time.Time { return now })
	var got []time.Duration
	for i := 0; i < 7; i++ {
		got = append(got, b.failed(tcpAddr("192.0.2.1")))
	}
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	if d := b.failed(tcpAddr("192.0.2.2")); d != 0 {
		t.Fatalf("another address delayed %s", d)
	}
	for i := 0; i < 10; i++ {
		if d := b.failed(tcpAddr("10.1.2.3")); d != 0 {
			t.Fatalf("allow-listed address delayed %s", d)
		}
	}
	now = now.Add(2 * time.Minute)
	if d := b.failed(tcpAddr("192.0.2.1")); d != 0 {
		t.Fatalf("after the forget period: %s", d)
	}
}

func tcpAddr(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 5000} }
