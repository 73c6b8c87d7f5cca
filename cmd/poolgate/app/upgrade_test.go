package app

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestHandoverInProcess: two gateways in one process, as an upgrade has
// them in two. The new one listens on the old one's listeners, adopts its
// pin and session, places by them, and releases the session when the old
// one says it ended; the old one stops accepting but runs until its last
// connection ends.
func TestHandoverInProcess(t *testing.T) {
	n1 := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	n2 := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	dir := t.TempDir()
	cfg := Config{StateDir: filepath.Join(dir, "state"), ShutdownTimeout: time.Second}
	cfg.SSH.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "node-1", SSH: n1}, {Name: "node-2", SSH: n2}}
	cfg.Health = discovery.HealthConfig{Interval: 50 * time.Millisecond, Rise: 1}
	cfg = cfg.WithDefaults()

	old, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithCancel(context.Background())
	defer ocancel()
	oldDone := make(chan error, 1)
	go func() { oldDone <- old.Run(octx) }()
	allUp := func(g *Gateway) func() bool {
		return func() bool {
			up := 0
			for _, n := range g.Balancer().Nodes() {
				if n.State == balancer.StateUp {
					up++
				}
			}
			return up == 2
		}
	}
	testutil.Eventually(t, 5*time.Second, "the old gateway's nodes up", allUp(old))
	alice, err := old.Balancer().Acquire("alice", balancer.SSH, "192.0.2.1:1")
	if err != nil {
		t.Fatal(err)
	}
	aliceNode := alice.Node().Name
	// A plain RDP connection held for no one (balancer.Hold).
	desk, err := old.Balancer().Hold(aliceNode, balancer.RDP, "192.0.2.3:1")
	if err != nil {
		t.Fatal(err)
	}
	// A connection the old gateway relays: it keeps the old one running.
	held, err := net.Dial("tcp", old.SSHAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := bufio.NewReader(held).ReadString('\n'); err != nil {
		t.Fatalf("the old gateway's banner: %v", err)
	}

	files, err := old.ListenerFiles()
	if err != nil {
		t.Fatal(err)
	}
	var ls []InheritedListener
	for _, f := range files {
		ln, err := net.FileListener(f.File)
		f.File.Close()
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, InheritedListener{Name: f.Name, Addr: f.Addr, Listener: ln})
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	next, err := New(cfg, nil, WithListeners(ls), WithHandover(r))
	if err != nil {
		t.Fatal(err)
	}
	if next.SSHAddr() != old.SSHAddr() || next.AdminAddr() != old.AdminAddr() {
		t.Fatalf("the new gateway listens on %s and %s, the old one on %s and %s", next.SSHAddr(), next.AdminAddr(), old.SSHAddr(), old.AdminAddr())
	}
	if kept := old.Retire(); kept != 2 {
		t.Errorf("Retire: the old gateway keeps %d sessions, want 2", kept)
	}
	hctx, hcancel := context.WithCancel(context.Background())
	defer hcancel()
	written := make(chan error, 1)
	go func() { written <- old.WriteHandover(hctx, w) }()
	nctx, ncancel := context.WithCancel(context.Background())
	nextDone := make(chan error, 1)
	go func() { nextDone <- next.Run(nctx) }()
	defer func() { ncancel(); <-nextDone }()

	testutil.Eventually(t, 5*time.Second, "alice's session and the unverified desktop adopted", func() bool {
		s := next.Balancer().Sessions()
		return len(s) == 2 && s[0].User == "alice" && s[0].Node == aliceNode && s[0].Client == "192.0.2.1:1" &&
			s[1].User == balancer.Unverified && s[1].Node == aliceNode
	})
	for _, p := range next.Balancer().Pins() {
		if p.User != "alice" {
			t.Errorf("the new gateway pins %q", p.User)
		}
	}
	// New connections reach the new gateway.
	c, err := net.Dial("tcp", next.SSHAddr())
	if err != nil {
		t.Fatalf("a connection after the handover: %v", err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		t.Errorf("banner after the handover: %q, %v", line, err)
	}
	c.Close()
	testutil.Eventually(t, 5*time.Second, "the new gateway's nodes up", allUp(next))
	bob, err := next.Balancer().Acquire("bob", balancer.SSH, "192.0.2.2:1")
	if err != nil {
		t.Fatal(err)
	}
	if bob.Node().Name == aliceNode {
		t.Errorf("bob placed on %s beside alice's adopted session, not on the empty node", aliceNode)
	}
	bob.Release()
	if n, ok := next.Balancer().Pinned("alice", balancer.SSH); !ok || n.Name != aliceNode {
		t.Errorf("alice's pin in the new gateway: %v %v, want %s", n.Name, ok, aliceNode)
	}

	select {
	case err := <-oldDone:
		t.Fatalf("the old gateway stopped while a connection was open: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	alice.Release()
	desk.Release()
	testutil.Eventually(t, 5*time.Second, "alice's adopted session released", func() bool {
		return len(next.Balancer().Sessions()) == 0
	})
	held.Close()
	select {
	case err := <-oldDone:
		if err != nil {
			t.Fatalf("the old gateway: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the old gateway still runs after its last connection ended")
	}
	hcancel()
	if err := <-written; err != nil {
		t.Errorf("WriteHandover: %v", err)
	}
}

// TestRetireUntilUpgradeTimeout: a retired gateway whose connection
// outlives upgrade_timeout ends it as a stop does and returns nil.
func TestRetireUntilUpgradeTimeout(t *testing.T) {
	n1 := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	cfg := Config{StateDir: filepath.Join(t.TempDir(), "state"), ShutdownTimeout: 200 * time.Millisecond, UpgradeTimeout: 300 * time.Millisecond}
	cfg.SSH.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "node-1", SSH: n1}}
	cfg = cfg.WithDefaults()
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	held, err := net.Dial("tcp", g.SSHAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := bufio.NewReader(held).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	g.Retire()
	if _, err := net.DialTimeout("tcp", g.SSHAddr(), time.Second); err == nil {
		t.Error("a connection was accepted after Retire (no new process holds the listener here)")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("Run returned after %s, before upgrade_timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the retired gateway still runs past upgrade_timeout")
	}
}
