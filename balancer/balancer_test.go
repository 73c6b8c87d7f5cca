package balancer

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// clock is a hand-set time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// first always picks the first of tied nodes, so table tests are exact.
func first(int) int { return 0 }

func newTest(t *testing.T, cfg Config, names ...string) (*Balancer, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	b := New(cfg, Options{Now: c.Now, Rand: first})
	var nodes []Node
	for _, n := range names {
		nodes = append(nodes, Node{Name: n, SSH: n + ":22", HTTP: n + ":8000"})
	}
	b.SetNodes(nodes)
	for _, n := range names {
		b.SetHealth(n, SSH, true, "ok")
		b.SetHealth(n, HTTP, true, "ok")
	}
	return b, c
}

func acquire(t *testing.T, b *Balancer, user string) *Lease {
	t.Helper()
	l, err := b.Acquire(user, SSH, "192.0.2.1:5000")
	if err != nil {
		t.Fatalf("Acquire(%s): %v", user, err)
	}
	return l
}

func TestRules(t *testing.T) {
	grace := 10 * time.Minute
	tests := []struct {
		name string
		run  func(t *testing.T, b *Balancer, c *clock)
	}{
		{"rule 3: new users spread to the least-loaded node", func(t *testing.T, b *Balancer, c *clock) {
			got := map[string]bool{}
			for _, u := range []string{"alice", "bob", "carol"} {
				got[acquire(t, b, u).Node().Name] = true
			}
			if len(got) != 3 {
				t.Fatalf("three users landed on %d nodes, want 3: %v", len(got), got)
			}
		}},
		{"rule 2: a user's sessions stay on their node", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			acquire(t, b, "bob")
			acquire(t, b, "carol")
			for i := 0; i < 5; i++ {
				if got := acquire(t, b, "alice").Node().Name; got != a.Node().Name {
					t.Fatalf("alice session %d on %s, want %s", i+2, got, a.Node().Name)
				}
			}
		}},
		{"rule 2: the pin outlives the last session by the grace, then expires", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			home := a.Node().Name
			// Load alice's node with others so it is no longer least loaded.
			for _, u := range []string{"bob", "carol", "dave", "erin"} {
				l := acquire(t, b, u)
				_ = l
			}
			a.Release()
			c.Add(grace - time.Second)
			if got := acquire(t, b, "alice"); got.Node().Name != home {
				t.Fatalf("within grace alice went to %s, want %s", got.Node().Name, home)
			} else {
				got.Release()
			}
			c.Add(grace)
			p, err := b.pick("alice")
			if err != nil {
				t.Fatal(err)
			}
			want, _ := b.pick("nobody-new")
			if p.Name != want.Name {
				t.Fatalf("after grace alice would go to %s, a new user to %s: want the same", p.Name, want.Name)
			}
		}},
		{"rule 3: draining and down nodes take no new users", func(t *testing.T, b *Balancer, c *clock) {
			if err := b.Drain("n1"); err != nil {
				t.Fatal(err)
			}
			b.SetHealth("n2", SSH, false, "connection refused")
			for _, u := range []string{"alice", "bob", "carol"} {
				if got := acquire(t, b, u).Node().Name; got != "n3" {
					t.Fatalf("%s on %s, want n3", u, got)
				}
			}
		}},
		{"rule 4: users pinned to a draining node still reach it", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			if err := b.Drain(a.Node().Name); err != nil {
				t.Fatal(err)
			}
			if got := acquire(t, b, "alice").Node().Name; got != a.Node().Name {
				t.Fatalf("pinned alice went to %s, want draining %s", got, a.Node().Name)
			}
			if got := acquire(t, b, "bob").Node().Name; got == a.Node().Name {
				t.Fatalf("new user bob placed on draining node %s", got)
			}
			if err := b.Undrain(a.Node().Name); err != nil {
				t.Fatal(err)
			}
			for _, st := range b.Nodes() {
				if st.State != StateUp {
					t.Fatalf("after undrain %s is %s", st.Name, st.State)
				}
			}
		}},
		{"rule 5: a failing check stops new users but moves nobody", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			b.SetHealth(a.Node().Name, SSH, false, "banner timeout")
			if l := acquire(t, b, "alice"); l.Node() != a.Node() || l.Repinned() != "" {
				t.Fatalf("one failing check moved alice to %s (repinned %q)", l.Node().Name, l.Repinned())
			}
			if bob := acquire(t, b, "bob"); bob.Node() == a.Node() {
				t.Fatalf("a new user was placed on %s, whose check fails", a.Node().Name)
			}
			// Long past repin_after, alice's session still relays: the
			// node is alive.
			c.Add(time.Hour)
			if l := acquire(t, b, "alice"); l.Node() != a.Node() {
				t.Fatalf("alice moved off %s while her sessions there relay", a.Node().Name)
			}
			if st := statusOf(b, a.Node().Name); st.State != StateDown || st.Check(SSH).Gone {
				t.Fatalf("status %+v: want down, not gone", st.Check(SSH))
			}
		}},
		{"rule 5: a gone node loses its pins, and the next lease says so", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			b.SetHealth(a.Node().Name, SSH, false, "banner timeout")
			b.NodeFailed(a.Node().Name, SSH) // a dial to it failed: gone
			l := acquire(t, b, "alice")
			if l.Node().Name == a.Node().Name {
				t.Fatalf("alice still sent to gone node %s", a.Node().Name)
			}
			if l.Repinned() != a.Node().Name {
				t.Fatalf("Repinned() = %q, want %q", l.Repinned(), a.Node().Name)
			}
			if again := acquire(t, b, "alice"); again.Repinned() != "" || again.Node() != l.Node() {
				t.Fatalf("second lease after re-pin: node %s repinned %q", again.Node().Name, again.Repinned())
			}
			// The node coming back does not pull alice back.
			b.SetHealth(a.Node().Name, SSH, true, "ok")
			if got := acquire(t, b, "alice").Node().Name; got != l.Node().Name {
				t.Fatalf("alice moved back to %s", got)
			}
		}},
		{"rule 5: a node down past repin_after with no session is gone", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			a.Release()
			b.SetHealth("n1", SSH, false, "connection refused")
			c.Add(DefaultRepinAfter - time.Second)
			if l := acquire(t, b, "alice"); l.Node().Name != "n1" {
				t.Fatalf("within repin_after alice went to %s, want n1", l.Node().Name)
			} else {
				l.Release()
			}
			c.Add(DefaultRepinAfter)
			l := acquire(t, b, "alice")
			if l.Node().Name == "n1" || l.Repinned() != "n1" {
				t.Fatalf("past repin_after alice on %s, repinned %q; want another node, moved from n1", l.Node().Name, l.Repinned())
			}
		}},
		{"rule 5: sessions that fail while the check fails make the node gone", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			acquire(t, b, "bob")
			acquire(t, b, "carol")
			a.Fail() // the check still passes: not proof of anything
			if l := acquire(t, b, "alice"); l.Node() != a.Node() {
				t.Fatalf("a failed session with the check passing moved alice to %s", l.Node().Name)
			} else {
				b.SetHealth(a.Node().Name, SSH, false, "timeout")
				l.Fail()
			}
			if l := acquire(t, b, "alice"); l.Node() == a.Node() || l.Repinned() != a.Node().Name {
				t.Fatalf("after her session failed on a node whose check fails, alice on %s (repinned %q)", l.Node().Name, l.Repinned())
			}
		}},
		{"rule 5: a node leaving the pool loses its pins", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			var keep []Node
			for _, n := range b.Nodes() {
				if n.Name != a.Node().Name {
					keep = append(keep, n.Node)
				}
			}
			b.SetNodes(keep)
			l := acquire(t, b, "alice")
			if l.Node().Name == a.Node().Name || l.Repinned() != a.Node().Name {
				t.Fatalf("after removal alice on %s repinned %q", l.Node().Name, l.Repinned())
			}
			a.Release() // releasing a lease on a removed node is harmless
		}},
		{"every check failing at once: new users go to a node that is not gone", func(t *testing.T, b *Balancer, c *clock) {
			for _, n := range []string{"n1", "n2", "n3"} {
				b.SetHealth(n, SSH, false, "banner timeout")
			}
			b.NodeFailed("n1", SSH)
			got := map[string]int{}
			for _, u := range []string{"alice", "bob", "carol", "dave"} {
				got[acquire(t, b, u).Node().Name]++
			}
			if got["n1"] != 0 || got["n2"] != 2 || got["n3"] != 2 {
				t.Fatalf("with every check failing and n1 gone, four users spread %v; want two each on n2 and n3", got)
			}
		}},
		{"rule 6: no node up gives ErrNoNode and leaves no trace", func(t *testing.T, b *Balancer, c *clock) {
			for _, n := range []string{"n1", "n2", "n3"} {
				b.SetHealth(n, SSH, false, "down")
				b.NodeFailed(n, SSH)
			}
			if _, err := b.Acquire("alice", SSH, ""); !errors.Is(err, ErrNoNode) {
				t.Fatalf("Acquire err = %v, want ErrNoNode", err)
			}
			if _, err := b.pick("alice"); !errors.Is(err, ErrNoNode) {
				t.Fatalf("Pick err = %v, want ErrNoNode", err)
			}
			if len(b.users) != 0 {
				t.Fatalf("failed acquire left %d user records", len(b.users))
			}
		}},
		{"max_sessions_per_node: full nodes take no new users, pinned users still fit", func(t *testing.T, b *Balancer, c *clock) {
			cfg := *b.conf()
			cfg.MaxSessionsPerNode = 1
			b.SetConfig(cfg) // as a reload does
			a := acquire(t, b, "alice")
			acquire(t, b, "bob")
			acquire(t, b, "carol")
			if _, err := b.Acquire("dave", SSH, ""); !errors.Is(err, ErrNoNode) {
				t.Fatalf("dave on a full pool: err = %v, want ErrNoNode", err)
			}
			if got := acquire(t, b, "alice").Node().Name; got != a.Node().Name {
				t.Fatalf("pinned alice went to %s", got)
			}
		}},
		{"weights scale the load", func(t *testing.T, b *Balancer, c *clock) {
			b.SetNodes([]Node{{Name: "n1", Weight: 4}, {Name: "n2", Weight: 1}, {Name: "n3", Weight: 1}})
			counts := map[string]int{}
			for i := 0; i < 12; i++ {
				counts[acquire(t, b, fmt.Sprintf("u%d", i)).Node().Name]++
			}
			if counts["n1"] != 8 || counts["n2"] != 2 || counts["n3"] != 2 {
				t.Fatalf("12 users over weights 4:1:1 → %v, want n1:8 n2:2 n3:2", counts)
			}
		}},
		{"abort leaves no pin and no count", func(t *testing.T, b *Balancer, c *clock) {
			l := acquire(t, b, "alice")
			l.Abort()
			l.Abort()
			for _, st := range b.Nodes() {
				if st.Sessions.Of(SSH) != 0 || st.Pinned != 0 || len(st.Users) != 0 {
					t.Fatalf("after abort %s: %+v", st.Name, st)
				}
			}
			if len(b.users) != 0 {
				t.Fatalf("abort left user records: %v", b.users)
			}
		}},
		{"a hub that is down takes no browser user and keeps its SSH users", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice") // n1
			b.SetHealth("n1", HTTP, false, "GET /hub/health: 502")
			// A failing hub check moves no browser user off their node.
			if h, err := b.Acquire("alice", HTTP, ""); err != nil || h.Node().Name != "n1" {
				t.Fatalf("browser session with n1's hub check failing: %v %v, want n1", h, err)
			} else {
				h.Release()
			}
			b.NodeFailed("n1", HTTP) // the proxy could not reach it: gone
			h, err := b.Acquire("alice", HTTP, "198.51.100.7:443")
			if err != nil {
				t.Fatal(err)
			}
			if h.Node().Name == "n1" || h.Repinned() != "n1" {
				t.Fatalf("browser session went to %s (repinned from %q), want another node, moved from n1", h.Node().Name, h.Repinned())
			}
			if st := statusOf(b, "n1"); st.State != StateUp || st.Check(HTTP).Up || !st.Check(HTTP).Checked || st.Check(HTTP).Detail != "GET /hub/health: 502" {
				t.Fatalf("n1 status: %+v", st)
			}
			// New SSH users still go to n1: only its hub is down.
			// n1 holds alice's SSH session, n2 her browser: bob goes to
			// n3, then dave to n1 (first of three equally loaded nodes).
			acquire(t, b, "bob")
			if dave := acquire(t, b, "dave"); dave.Node().Name != "n1" {
				t.Fatalf("dave went to %s, want n1: a node whose hub is down still takes SSH users", dave.Node().Name)
			}
			for _, n := range []string{"n2", "n3"} {
				b.SetHealth(n, HTTP, false, "down")
			}
			// No hub check passes, but n2's and n3's hubs are not gone:
			// a new browser user goes to one of them (n1's is gone).
			if l, err := b.Acquire("carol", HTTP, ""); err != nil || l.Node().Name == "n1" {
				t.Fatalf("no hub check passing: carol got %v %v, want n2 or n3", l, err)
			} else {
				l.Abort()
			}

			if l, err := b.Acquire("alice", HTTP, ""); err != nil || l.Node() != h.Node() {
				t.Fatalf("no hub check passing: got %v %v for alice, want her node %s (failing, not gone)", l, err, h.Node().Name)
			} else {
				l.Release()
			}
			for _, n := range []string{"n2", "n3"} {
				b.NodeFailed(n, HTTP)
			}
			if _, err := b.Acquire("carol", HTTP, ""); !errors.Is(err, ErrNoNode) {
				t.Fatalf("no hub up: got %v, want ErrNoNode", err)
			}
			if _, err := b.Acquire("alice", HTTP, ""); !errors.Is(err, ErrNoNode) {
				t.Fatalf("no hub up, hers gone: got %v for alice, want ErrNoNode", err)
			}
			if p, _ := b.pick("alice"); p.Name != h.Node().Name {
				t.Fatalf("a failed browser Acquire moved alice's pin to %s", p.Name)
			}
			if _, err := b.Acquire("carol", SSH, ""); err != nil {
				t.Fatalf("no hub up must not stop SSH: %v", err)
			}
			a.Release()
			h.Release()
		}},
		{"anonymous browser requests follow their preferred node while it is up", func(t *testing.T, b *Balancer, c *clock) {
			if n, err := b.Route(HTTP, "n2"); err != nil || n.Name != "n2" {
				t.Fatalf("Route(http, n2) = %v, %v", n.Name, err)
			}
			b.SetHealth("n2", HTTP, false, "down")
			if !b.Usable("n2", HTTP) {
				t.Fatal("a failing hub check made n2 unusable for the browser sessions it holds")
			}
			b.NodeFailed("n2", HTTP)
			if b.Usable("n2", HTTP) || !b.Usable("n2", SSH) || b.Usable("gone", SSH) {
				t.Fatal("Usable does not follow per-protocol health")
			}
			if n, err := b.Route(HTTP, "n2"); err != nil || n.Name != "n1" {
				t.Fatalf("Route(http, n2) with n2's hub down = %v, %v; want n1", n.Name, err)
			}
			if n, err := b.Route(HTTP, "forged"); err != nil || n.Name != "n1" {
				t.Fatalf("Route(http, unknown) = %v, %v; want n1", n.Name, err)
			}
			if len(b.Sessions()) != 0 {
				t.Fatal("Route took a lease")
			}
			for _, n := range []string{"n1", "n3"} {
				b.SetHealth(n, HTTP, false, "down")
			}
			if _, err := b.Route(HTTP, ""); !errors.Is(err, ErrNoNode) {
				t.Fatalf("Route with no hub up: %v", err)
			}
		}},
		{"a move made by a browser session is still told on the next SSH login", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice") // n1
			a.Release()
			b.SetHealth("n1", SSH, false, "refused")
			b.NodeFailed("n1", SSH)
			h, err := b.Acquire("alice", HTTP, "")
			if err != nil || h.Node().Name == "n1" {
				t.Fatalf("browser after n1 went down: %v %v", h, err)
			}
			s := acquire(t, b, "alice")
			if s.Node().Name != h.Node().Name || s.Repinned() != "n1" {
				t.Fatalf("SSH login on %s, Repinned %q; want %s and n1", s.Node().Name, s.Repinned(), h.Node().Name)
			}
			if s2 := acquire(t, b, "alice"); s2.Repinned() != "" {
				t.Fatalf("second SSH login told again: %q", s2.Repinned())
			}
		}},
		{"a node without a hub address takes no browser user", func(t *testing.T, b *Balancer, c *clock) {
			b.SetNodes([]Node{{Name: "n1", SSH: "n1:22"}, {Name: "n2", SSH: "n2:22", HTTP: "n2:8000"}, {Name: "n3", SSH: "n3:22", HTTP: "n3:8000"}})
			b.SetHealth("n1", HTTP, true, "ok")
			b.SetHealth("n3", HTTP, false, "down")
			for range 3 {
				h, err := b.Acquire("u"+fmt.Sprint(c.t.Nanosecond()), HTTP, "")
				if err != nil || h.Node().Name != "n2" {
					t.Fatalf("browser session: %v on %v, want n2", err, h)
				}
				c.t = c.t.Add(time.Nanosecond)
			}
		}},
		{"counts and snapshots follow leases", func(t *testing.T, b *Balancer, c *clock) {
			a1 := acquire(t, b, "alice")
			a2 := acquire(t, b, "alice")
			h, err := b.Acquire("alice", HTTP, "198.51.100.7:443")
			if err != nil {
				t.Fatal(err)
			}
			st := statusOf(b, a1.Node().Name)
			if st.Sessions.Of(SSH) != 2 || st.Sessions.Of(HTTP) != 1 || len(st.Users) != 1 || st.Users[0] != "alice" || st.Pinned != 1 {
				t.Fatalf("status with 3 leases: %+v", st)
			}
			if got := len(b.Sessions()); got != 3 {
				t.Fatalf("Sessions() has %d entries, want 3", got)
			}
			a1.Release()
			a1.Release() // idempotent
			a2.Release()
			h.Release()
			st = statusOf(b, a1.Node().Name)
			if st.Sessions.Of(SSH) != 0 || st.Sessions.Of(HTTP) != 0 || len(st.Users) != 0 || st.Pinned != 1 {
				t.Fatalf("status after release: %+v (want pin kept in grace)", st)
			}
			if got := len(b.Sessions()); got != 0 {
				t.Fatalf("Sessions() has %d entries after release", got)
			}
			if b.Started(SSH) != 2 || b.Ended(SSH) != 2 || b.Started(HTTP) != 1 || b.Ended(HTTP) != 1 {
				t.Fatalf("counters: ssh %d/%d http %d/%d", b.Started(SSH), b.Ended(SSH), b.Started(HTTP), b.Ended(HTTP))
			}
		}},
		{"avoid: a node the front end could not reach is skipped, and its user moved", func(t *testing.T, b *Balancer, c *clock) {
			a := acquire(t, b, "alice")
			if b.UserSessions("alice") != 1 {
				t.Fatalf("UserSessions = %d, want 1", b.UserSessions("alice"))
			}
			l, err := b.Acquire("alice", SSH, "", a.Node().Name)
			if err != nil {
				t.Fatal(err)
			}
			if l.Node().Name == a.Node().Name || l.Repinned() != a.Node().Name {
				t.Fatalf("avoiding %s: got %s, repinned %q", a.Node().Name, l.Node().Name, l.Repinned())
			}
			n, err := b.Acquire("bob", SSH, "", "n1", "n2")
			if err != nil || n.Node().Name != "n3" {
				t.Fatalf("bob avoiding n1, n2: %v %v", n, err)
			}
			if _, err := b.Acquire("carol", SSH, "", "n1", "n2", "n3"); !errors.Is(err, ErrNoNode) {
				t.Fatalf("all avoided: %v", err)
			}
		}},
		{"drain of an unknown node is an error", func(t *testing.T, b *Balancer, c *clock) {
			if err := b.Drain("nope"); !errors.Is(err, ErrUnknownNode) {
				t.Fatalf("Drain(nope) = %v, want ErrUnknownNode", err)
			}
		}},
		{"sweep forgets users whose grace has passed", func(t *testing.T, b *Balancer, c *clock) {
			acquire(t, b, "alice").Release()
			c.Add(2 * grace)
			acquire(t, b, "bob")
			if _, ok := b.users["alice"]; ok {
				t.Fatal("alice's expired record was not swept")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, c := newTest(t, Config{AffinityGrace: grace}, "n1", "n2", "n3")
			tt.run(t, b, c)
		})
	}
}

func statusOf(b *Balancer, name string) NodeStatus {
	for _, st := range b.Nodes() {
		if st.Name == name {
			return st
		}
	}
	return NodeStatus{}
}

func TestNewNodesStartDown(t *testing.T) {
	b := New(Config{}, Options{})
	b.SetNodes([]Node{{Name: "n1"}})
	if st := b.Nodes()[0]; st.State != StateDown || st.Check(SSH).Checked {
		t.Fatalf("unchecked node: state %s checked %v", st.State, st.Check(SSH).Checked)
	}
	if _, err := b.pick("alice"); !errors.Is(err, ErrNoNode) {
		t.Fatalf("Pick before any health report: %v", err)
	}
}

func TestTiesAreRandom(t *testing.T) {
	b := New(Config{}, Options{}) // real randomness
	b.SetNodes([]Node{{Name: "n1"}, {Name: "n2"}, {Name: "n3"}})
	for _, n := range []string{"n1", "n2", "n3"} {
		b.SetHealth(n, SSH, true, "")
	}
	seen := map[string]int{}
	for i := 0; i < 300; i++ {
		n, err := b.pick("alice")
		if err != nil {
			t.Fatal(err)
		}
		seen[n.Name]++
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if seen[n] < 50 { // expected 100; P(<50) is negligible
			t.Fatalf("tie-break picked %s %d times of 300: %v", n, seen[n], seen)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, ""},
		{Config{AffinityGrace: -time.Second}, "affinity_grace"},
		{Config{MaxSessionsPerNode: -1}, "max_sessions_per_node"},
	} {
		err := tt.cfg.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want mention of %q", tt.cfg, err, tt.want)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub)))
}

// TestConcurrentUse hammers Acquire/Release/Pick/SetHealth/Drain from many
// goroutines; with -race it checks the locking, and at the end every count
// must be back to zero. While nodes are only drained (never taken down),
// pins cannot move, so a user with a live lease must be picked for its
// node (rule 4); once nodes go down and up, pins legitimately move
// (rule 5), and only the final counts are checked.
func TestConcurrentUse(t *testing.T) {
	for _, phase := range []struct {
		name      string
		downs     bool
		checkPins bool
	}{{"drain only", false, true}, {"health changes", true, false}} {
		t.Run(phase.name, func(t *testing.T) {
			b := New(Config{AffinityGrace: time.Minute}, Options{})
			var nodes []Node
			for i := 0; i < 8; i++ {
				nodes = append(nodes, Node{Name: fmt.Sprintf("n%d", i), HTTP: fmt.Sprintf("n%d:8000", i)})
			}
			b.SetNodes(nodes)
			for _, n := range nodes {
				b.SetHealth(n.Name, SSH, true, "")
				b.SetHealth(n.Name, HTTP, true, "")
			}
			var wg sync.WaitGroup
			for w := 0; w < 16; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 500; i++ {
						user := fmt.Sprintf("u%d", (w*7+i)%40)
						l, err := b.Acquire(user, Protocol([]string{"ssh", "http"}[i%2]), "")
						if err != nil {
							continue
						}
						if p, err := b.pick(user); phase.checkPins && (err != nil || p.Name != l.Node().Name) {
							t.Errorf("Pick(%s) = %s, %v while a live lease is on %s", user, p.Name, err, l.Node().Name)
						}
						if i%3 == 0 {
							l.Abort()
						} else {
							l.Release()
						}
					}
				}(w)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 300; i++ {
					n := nodes[i%len(nodes)].Name
					if phase.downs {
						b.SetHealth(n, SSH, i%5 != 0, "")
					}
					if i%4 == 0 {
						_ = b.Drain(n)
					} else {
						_ = b.Undrain(n)
					}
					b.Nodes()
					b.Sessions()
				}
			}()
			wg.Wait()
			for _, st := range b.Nodes() {
				if st.Sessions.Of(SSH) != 0 || st.Sessions.Of(HTTP) != 0 || len(st.Users) != 0 {
					t.Errorf("node %s not back to zero: %+v", st.Name, st)
				}
			}
			if n := len(b.Sessions()); n != 0 {
				t.Errorf("%d sessions left", n)
			}
		})
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIdleSince(t *testing.T) {
	b, c := newTest(t, Config{}, "n1")
	joined := c.Now()
	status := func() NodeStatus { return b.Nodes()[0] }
	if got := status().IdleSince; !got.Equal(joined) {
		t.Fatalf("a node that never had a session is idle since it joined (%v), got %v", joined, got)
	}
	c.Add(time.Minute)
	l1, l2 := acquire(t, b, "alice"), acquire(t, b, "bob")
	if got := status().IdleSince; !got.IsZero() {
		t.Fatalf("a node with sessions has no idle time, got %v", got)
	}
	c.Add(time.Minute)
	l1.Release()
	if got := status().IdleSince; !got.IsZero() {
		t.Fatalf("one session still open: want no idle time, got %v", got)
	}
	c.Add(time.Minute)
	l2.Release()
	if got, want := status().IdleSince, c.Now(); !got.Equal(want) {
		t.Fatalf("idle since the last session ended (%v), got %v", want, got)
	}
}
