package rdpgw

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/internal/testutil"
)

// confirm is a Connection Confirm selecting TLS, as xrdp sends it.
var confirm = []byte("\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x01\x00\x00\x00")

// fakeNode is an RDP server stand-in: it reads the Connection Request,
// answers with a Connection Confirm, then, when talk is set, answers
// every client write with a screenful (big) of bytes, as a node past
// authentication does; otherwise it reads and says nothing more, as a
// node waiting for CredSSP credentials that never come.
type fakeNode struct {
	addr string
	talk bool
	big  int

	mu    sync.Mutex
	first [][]byte // the first packets received
}

func newFakeNode(t *testing.T, talk bool) *fakeNode {
	n := &fakeNode{talk: talk, big: 20000}
	n.addr = testutil.ServeTCP(t, "127.0.0.1:0", n.serve)
	return n
}

func (n *fakeNode) serve(c net.Conn) {
	cr, err := ReadConnectionRequest(c, 1024)
	if err != nil {
		return
	}
	n.mu.Lock()
	n.first = append(n.first, cr.Raw)
	n.mu.Unlock()
	if _, err := c.Write(confirm); err != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
		if n.talk {
			if _, err := c.Write(make([]byte, n.big)); err != nil {
				return
			}
		}
	}
}

func (n *fakeNode) got() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([][]byte(nil), n.first...)
}

// pool is a balancer over fake nodes n1, n2, … and an RDP gateway.
type pool struct {
	reg   *prometheus.Registry // the gateway's metrics
	bal   *balancer.Balancer
	srv   *Server
	addr  string
	nodes []*fakeNode
}

func newPool(t *testing.T, cfg Config, nodes ...*fakeNode) *pool {
	t.Helper()
	p := &pool{bal: balancer.New(balancer.Config{}, balancer.Options{Rand: func(int) int { return 0 }}), nodes: nodes}
	var bn []balancer.Node
	for i, n := range nodes {
		bn = append(bn, balancer.Node{Name: nodeName(i), SSH: "127.0.0.1:1", RDP: n.addr})
	}
	p.bal.SetNodes(bn)
	for _, n := range bn {
		p.bal.SetHealth(n.Name, balancer.SSH, true, "ok")
		p.bal.SetHealth(n.Name, balancer.RDP, true, "ok")
	}
	if cfg.ProofTime == 0 {
		cfg.ProofTime = 20 * time.Millisecond
	}
	p.reg = prometheus.NewRegistry()
	srv, err := New(cfg, p.bal, Options{Metrics: gwmetrics.New(p.reg).Front(balancer.RDP)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	p.srv, p.addr = srv, ln.Addr().String()
	return p
}

func nodeName(i int) string { return "n" + string(rune('1'+i)) }

// dial connects as an RDP client: it sends pkt and reads the Connection
// Confirm.
func (p *pool) dial(t *testing.T, pkt []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(confirm))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, confirm) {
		t.Fatalf("Connection Confirm: %q %v", got, err)
	}
	return c
}

// talk sends a byte and reads whatever comes back for a moment: one
// round of client input and node output.
func talk(c net.Conn) {
	_, _ = c.Write([]byte{0x17})
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
}

func (p *pool) rdpSessions(node int) int { return p.bal.Nodes()[node].Sessions.Of(balancer.RDP) }

func TestProvenConnectionCountsOnItsNodeUnverified(t *testing.T) {
	n1 := newFakeNode(t, true)
	p := newPool(t, Config{}, n1)
	pkt := BuildConnectionRequest("Cookie: mstshash=alice", 3)
	c := p.dial(t, pkt)
	if got := n1.got(); len(got) != 1 || !bytes.Equal(got[0], pkt) {
		t.Fatalf("node got %q, want the client's packet unchanged", got)
	}
	testutil.Eventually(t, 5*time.Second, "the RDP session counted on n1", func() bool {
		talk(c)
		return p.rdpSessions(0) == 1
	})
	ss := p.bal.Sessions()
	if len(ss) != 1 || ss[0].User != balancer.Unverified || ss[0].Protocol != balancer.RDP || ss[0].Node != "n1" {
		t.Fatalf("sessions %+v, want one RDP session on n1 as %s", ss, balancer.Unverified)
	}
	if p.srv.Unproven() != 0 {
		t.Fatalf("unproven %d after proof", p.srv.Unproven())
	}
	if p.bal.UserSessions("alice") != 0 {
		t.Fatalf("a cookie naming alice counted %d sessions for her", p.bal.UserSessions("alice"))
	}
	c.Close()
	testutil.Eventually(t, 5*time.Second, "session released", func() bool { return p.rdpSessions(0) == 0 })
	if _, node := p.bal.PinnedUser("alice", false, balancer.RDP); node != "" {
		t.Fatalf("a cookie naming alice pinned her to %q", node)
	}
}

// TestForgedCookieMovesNoOne: mallory's connection claims alice, who
// works on n2 over SSH; the node keeps it (no NLA). Her pin, her count
// and her per-user limit stay as they were.
func TestForgedCookieMovesNoOne(t *testing.T) {
	n1, n2 := newFakeNode(t, true), newFakeNode(t, true)
	p := newPool(t, Config{}, n1, n2)
	p.bal.SetHealth("n1", balancer.SSH, false, "down")
	l, err := p.bal.Acquire("alice", balancer.SSH, "c")
	if err != nil || l.Node().Name != "n2" {
		t.Fatalf("alice's SSH: %v %v", l, err)
	}
	p.bal.SetHealth("n1", balancer.SSH, true, "ok")
	l.Release() // alice is between sessions: her pin is in its grace
	c := p.dial(t, BuildConnectionRequest("Cookie: mstshash=alice", 3))
	testutil.Eventually(t, 5*time.Second, "the forged connection counted on n2", func() bool { talk(c); return p.rdpSessions(1) == 1 })
	if _, node := p.bal.PinnedUser("alice", false, balancer.RDP); node != "n2" {
		t.Fatalf("alice's pin after a forged connection: %q, want n2", node)
	}
	if n := p.bal.UserSessions("alice"); n != 0 { // what ssh.max_sessions_per_user reads
		t.Fatalf("alice's sessions: %d, want 0", n)
	}
	l2, err := p.bal.Acquire("alice", balancer.SSH, "c")
	if err != nil || l2.Node().Name != "n2" {
		t.Fatalf("alice's next SSH session: %v %v, want n2", l2, err)
	}
	l2.Release()
}

func TestUnprovenConnectionsCountNothing(t *testing.T) {
	silent := newFakeNode(t, false)
	p := newPool(t, Config{MaxUnprovenPerAddress: 100}, silent)
	pkt := BuildConnectionRequest("Cookie: mstshash=victim", 3)
	var conns []net.Conn
	for range 40 {
		c := p.dial(t, pkt)
		talk(c) // the client goes on, the node says nothing more
		conns = append(conns, c)
	}
	// Some leave after the first packet, without reading the answer.
	for range 20 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(pkt)
		c.Close()
	}
	testutil.Eventually(t, 5*time.Second, "60 connections reached the node", func() bool { return len(silent.got()) == 60 })
	// The 20 that left are let go as their close reaches the gateway.
	testutil.Eventually(t, 5*time.Second, "the 40 held, and only they, unproven", func() bool { return p.srv.Unproven() == 40 })
	for _, c := range conns {
		talk(c)
		c.Close()
	}
	testutil.Eventually(t, 5*time.Second, "all unproven gone", func() bool { return p.srv.Unproven() == 0 })
	if p.bal.Started(balancer.RDP) != 0 || p.rdpSessions(0) != 0 {
		t.Fatalf("forged cookies counted: %d started", p.bal.Started(balancer.RDP))
	}
	if _, node := p.bal.PinnedUser("victim", false, balancer.RDP); node != "" {
		t.Fatalf("forged cookies pinned victim to %s", node)
	}
}

func TestSmallTalkIsNoProof(t *testing.T) {
	// A node that answers every client message with a little (a TLS
	// handshake, a CredSSP challenge) never sends proof_bytes.
	small := newFakeNode(t, true)
	small.big = 300
	p := newPool(t, Config{}, small)
	c := p.dial(t, BuildConnectionRequest("Cookie: mstshash=victim", 3))
	for range 20 {
		talk(c)
	}
	c.Close()
	testutil.Eventually(t, 5*time.Second, "connection gone", func() bool { return p.srv.Unproven() == 0 })
	if p.bal.Started(balancer.RDP) != 0 {
		t.Fatal("a node's small answers counted as proof")
	}
}

func TestNodeOutputAloneIsNoProof(t *testing.T) {
	// The node sends a screenful unasked right after its Connection
	// Confirm; the client never sends past its first packet. That is no
	// proof: the connection ends uncounted.
	eager := testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		if _, err := ReadConnectionRequest(c, 1024); err != nil {
			return
		}
		_, _ = c.Write(confirm)
		_, _ = c.Write(make([]byte, 20000))
		_, _ = io.Copy(io.Discard, c)
	})
	p := newPool(t, Config{}, &fakeNode{addr: eager})
	mark := make(chan time.Time)
	waiting := make(chan struct{}, 100)
	p.srv.mu.Lock()
	p.srv.proofMark, p.srv.proofWaiting = mark, func() { waiting <- struct{}{} }
	p.srv.mu.Unlock()
	c := p.dial(t, BuildConnectionRequest("Cookie: mstshash=bob", 3))
	if _, err := io.ReadFull(c, make([]byte, 20000)); err != nil {
		t.Fatal(err)
	}
	mark <- time.Now()
	testutil.Eventually(t, 5*time.Second, "checked after proof_time", func() bool {
		select {
		case <-waiting:
			return true
		default:
			return p.bal.Started(balancer.RDP) > 0
		}
	})
	c.Close()
	testutil.Eventually(t, 5*time.Second, "connection gone", func() bool { return p.srv.Unproven() == 0 })
	if p.bal.Started(balancer.RDP) != 0 {
		t.Fatal("a connection whose client never spoke past its first packet counted")
	}
}

func TestQuietClientPastHandshakeCounts(t *testing.T) {
	// After its handshake a client at an idle logon screen or desktop
	// may send nothing for long; it still counts once proof_time passed.
	n1 := newFakeNode(t, true)
	p := newPool(t, Config{}, n1)
	mark := make(chan time.Time)
	p.srv.mu.Lock()
	p.srv.proofMark = mark
	p.srv.mu.Unlock()
	c := p.dial(t, BuildConnectionRequest("Cookie: mstshash=erin", 3))
	talk(c) // the handshake: the node sends 20000 bytes
	mark <- time.Now()
	testutil.Eventually(t, 5*time.Second, "erin counted", func() bool { return p.rdpSessions(0) == 1 })
}

func TestPinnedUserGoesToHisNode(t *testing.T) {
	n1, n2 := newFakeNode(t, true), newFakeNode(t, true)
	p := newPool(t, Config{}, n1, n2)
	// alice holds an SSH session on n2.
	p.bal.SetHealth("n1", balancer.SSH, false, "down")
	l, err := p.bal.Acquire("alice", balancer.SSH, "c")
	if err != nil || l.Node().Name != "n2" {
		t.Fatalf("alice's SSH: %v %v", l, err)
	}
	p.bal.SetHealth("n1", balancer.SSH, true, "ok")
	// Her cookie names her as Windows users type: the same user.
	c := p.dial(t, BuildConnectionRequest(`Cookie: mstshash=CONTOSO\Alice`, 3))
	if len(n2.got()) != 1 || len(n1.got()) != 0 {
		t.Fatalf("alice's RDP went to n1 %d, n2 %d times", len(n1.got()), len(n2.got()))
	}
	testutil.Eventually(t, 5*time.Second, "counted on n2", func() bool { talk(c); return p.rdpSessions(1) == 1 })
	// A domain and a name cut to 9 characters: "CONTOSO\\a" says nothing
	// about names that start with "a" (alice), so it goes least-loaded: n1.
	p.dial(t, BuildConnectionRequest(`Cookie: mstshash=CONTOSO\a`, 3))
	if len(n1.got()) != 1 || len(n2.got()) != 1 {
		t.Fatalf("CONTOSO\\a went to n1 %d, n2 %d times; want n1 (no prefix match across a domain)", len(n1.got()), len(n2.got())-1)
	}
	// A cookie cut to 9 characters, in any case, finds christopher's node.
	p.bal.SetHealth("n2", balancer.SSH, false, "down")
	l2, err := p.bal.Acquire("christopher", balancer.SSH, "c")
	if err != nil || l2.Node().Name != "n1" {
		t.Fatalf("christopher's SSH: %v %v", l2, err)
	}
	p.bal.SetHealth("n2", balancer.SSH, true, "ok")
	c2 := p.dial(t, BuildConnectionRequest("Cookie: mstshash=Christoph", 3))
	if len(n1.got()) != 2 {
		t.Fatalf("christoph went to n1 %d times", len(n1.got())-1)
	}
	testutil.Eventually(t, 5*time.Second, "counted on n1, for no user", func() bool {
		talk(c2)
		return p.rdpSessions(0) == 1 && p.bal.UserSessions("christopher") == 1
	})
}

func TestCookieNeverPins(t *testing.T) {
	n1, n2 := newFakeNode(t, true), newFakeNode(t, true)
	p := newPool(t, Config{}, n1, n2)
	c := p.dial(t, BuildConnectionRequest("Cookie: mstshash=bob", 3))
	testutil.Eventually(t, 5*time.Second, "bob's connection counted", func() bool {
		talk(c)
		return p.rdpSessions(0)+p.rdpSessions(1) == 1
	})
	if _, node := p.bal.PinnedUser("bob", false, balancer.RDP); node != "" || p.bal.UserSessions("bob") != 0 {
		t.Fatalf("a cookie naming bob pinned him to %q with %d sessions", node, p.bal.UserSessions("bob"))
	}
}

func TestPreAuthLimits(t *testing.T) {
	n1 := newFakeNode(t, true)
	p := newPool(t, Config{MaxUnprovenPerAddress: 2, FirstPacketTimeout: time.Hour}, n1)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	testutil.Eventually(t, 5*time.Second, "two unproven", func() bool { return p.srv.Unproven() == 2 })
	c3, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Fatal("a third unproven connection from the address was served")
	}
	held[0].Close()
	testutil.Eventually(t, 5*time.Second, "slot freed", func() bool { return p.srv.Unproven() == 1 })
	p.dial(t, BuildConnectionRequest("", 3)) // admitted again

	// A first packet larger than max_first_packet, or not RDP, is closed
	// without reaching a node.
	for _, pkt := range [][]byte{
		BuildConnectionRequest("Cookie: mstshash="+string(bytes.Repeat([]byte("a"), 2000)), 3),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	} {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(pkt)
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("%.20q was answered", pkt)
		}
		c.Close()
	}
	if len(n1.got()) != 1 {
		t.Fatalf("node got %d packets, want 1", len(n1.got()))
	}
}

func TestFirstPacketTimeout(t *testing.T) {
	p := newPool(t, Config{FirstPacketTimeout: 50 * time.Millisecond}, newFakeNode(t, true))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent client was answered")
	}
	testutil.Eventually(t, 5*time.Second, "slot freed", func() bool { return p.srv.Unproven() == 0 })
}

func TestIdleTimeout(t *testing.T) {
	p := newPool(t, Config{IdleTimeout: 100 * time.Millisecond}, newFakeNode(t, true))
	c := p.dial(t, BuildConnectionRequest("Cookie: mstshash=carol", 3))
	testutil.Eventually(t, 5*time.Second, "counted", func() bool { talk(c); return p.rdpSessions(0) == 1 })
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("idle connection: %v, want closed", err)
	}
	testutil.Eventually(t, 5*time.Second, "released", func() bool { return p.rdpSessions(0) == 0 })
}

func TestNoNodeForRDP(t *testing.T) {
	n1 := newFakeNode(t, true)
	p := newPool(t, Config{}, n1)
	p.bal.SetHealth("n1", balancer.RDP, false, "refused")
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(BuildConnectionRequest("Cookie: mstshash=dave", 3))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("answered with no RDP node up")
	}
	if len(n1.got()) != 0 {
		t.Fatal("routed to a node whose RDP is down")
	}
}

// The RDP front end records picks, relayed bytes both ways and the
// connections no node could take in the families SSH and HTTP share.
func TestMetricsOfRDP(t *testing.T) {
	n1 := newFakeNode(t, true)
	p := newPool(t, Config{}, n1)
	val := func(name string, labels ...string) float64 {
		t.Helper()
		return testutil.MetricValue(t, p.reg, name, labels...)
	}
	pkt := BuildConnectionRequest("Cookie: mstshash=alice", 3)
	c := p.dial(t, pkt)
	talk(c)
	c.Close()
	testutil.Eventually(t, 5*time.Second, "the relay's bytes counted", func() bool {
		return val("poolgate_relayed_bytes_total", "protocol", "rdp", "direction", "to_node") >= float64(len(pkt)+1) &&
			val("poolgate_relayed_bytes_total", "protocol", "rdp", "direction", "to_client") >= float64(len(confirm)+n1.big)
	})
	if got := val("poolgate_pick_duration_seconds", "protocol", "rdp"); got != 1 {
		t.Errorf("pick histogram: %v observations, want 1", got)
	}

	p.bal.SetHealth("n1", balancer.RDP, false, "refused")
	refused := func(reason string) {
		t.Helper()
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(BuildConnectionRequest("Cookie: mstshash=dave", 3))
		_, _ = c.Read(make([]byte, 1))
		testutil.Eventually(t, 5*time.Second, reason+" counted", func() bool {
			return val("poolgate_login_refusals_total", "protocol", "rdp", "reason", reason) == 1
		})
	}
	refused("no_node")

	// A node whose RDP port takes no connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	ln.Close()
	p.bal.SetNodes([]balancer.Node{{Name: "n1", SSH: "127.0.0.1:1", RDP: gone}})
	p.bal.SetHealth("n1", balancer.SSH, true, "ok")
	p.bal.SetHealth("n1", balancer.RDP, true, "ok")
	refused("node_unreachable")
}

func TestConfigValidate(t *testing.T) {
	for cfg, key := range map[*Config]string{
		{Listen: "nope"}:                             "listen:",
		{IdleTimeout: -1}:                            "idle_timeout:",
		{MaxFirstPacket: 5}:                          "max_first_packet:",
		{MaxUnprovenPerAddress: -1}:                  "max_unproven_per_address:",
		{ProofTime: time.Minute, ProofTimeout: 1}:    "proof_timeout:",
		{ProofBytes: -1}:                             "proof_bytes:",
		{FirstPacketTimeout: -time.Second}:           "first_packet_timeout:",
		{MaxFirstPacket: 70000, Listen: "0.0.0.0:1"}: "max_first_packet:",
	} {
		err := cfg.Validate()
		if err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte(key)) {
			t.Errorf("%+v: %v, want %s", *cfg, err, key)
		}
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}
