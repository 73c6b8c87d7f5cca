package redisstate

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
)

// ruleCases are the routing rules as a user and ops see them, through
// the balancer's public face. Each runs against a balancer alone and one
// sharing its state through a real redis-server: the rules live once
// (balancer/rules.go), so both must answer alike.
var ruleCases = []struct {
	name string
	run  func(t *testing.T, b *balancer.Balancer)
}{
	{"new users spread; a user's sessions stay on her node", func(t *testing.T, b *balancer.Balancer) {
		seen := map[string]bool{}
		for _, u := range []string{"alice", "bob", "carol"} {
			seen[must(t, b, u).Node().Name] = true
		}
		if len(seen) != 3 {
			t.Fatalf("three users on %d nodes", len(seen))
		}
		a := must(t, b, "alice")
		for range 3 {
			if got := must(t, b, "alice"); got.Node() != a.Node() {
				t.Fatalf("alice's next session on %s, want %s", got.Node().Name, a.Node().Name)
			}
		}
	}},
	{"a draining node takes no new users; its users still reach it", func(t *testing.T, b *balancer.Balancer) {
		a := must(t, b, "alice")
		if err := b.Drain(a.Node().Name); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"bob", "carol", "dave"} {
			if must(t, b, u).Node() == a.Node() {
				t.Fatalf("%s placed on draining %s", u, a.Node().Name)
			}
		}
		if got := must(t, b, "alice"); got.Node() != a.Node() {
			t.Fatalf("alice sent to %s, off her draining node", got.Node().Name)
		}
	}},
	{"a failing check moves nobody; a gone node moves its users, who are told", func(t *testing.T, b *balancer.Balancer) {
		a := must(t, b, "alice")
		home := a.Node().Name
		b.SetHealth(home, balancer.SSH, false, "banner timeout")
		if got := must(t, b, "alice"); got.Node().Name != home || got.Repinned() != "" {
			t.Fatalf("one failing check moved alice to %s (repinned %q)", got.Node().Name, got.Repinned())
		}
		if must(t, b, "bob").Node().Name == home {
			t.Fatalf("bob placed on %s, whose check fails", home)
		}
		b.NodeFailed(home, balancer.SSH)
		got := must(t, b, "alice")
		if got.Node().Name == home || got.Repinned() != home {
			t.Fatalf("after %s was gone alice on %s (repinned %q)", home, got.Node().Name, got.Repinned())
		}
		if again := must(t, b, "alice"); again.Node() != got.Node() || again.Repinned() != "" {
			t.Fatalf("alice told twice, or moved again: %s %q", again.Node().Name, again.Repinned())
		}
	}},
	{"every check failing: a new user goes to a node that is not gone", func(t *testing.T, b *balancer.Balancer) {
		for _, n := range nodeNames {
			b.SetHealth(n, balancer.SSH, false, "banner timeout")
		}
		b.NodeFailed("node-1", balancer.SSH)
		if got := must(t, b, "alice"); got.Node().Name == "node-1" {
			t.Fatal("alice placed on a gone node")
		}
		b.NodeFailed("node-2", balancer.SSH)
		b.NodeFailed("node-3", balancer.SSH)
		if _, err := b.Acquire("bob", balancer.SSH, "c"); !errors.Is(err, balancer.ErrNoNode) {
			t.Fatalf("every node gone: %v, want ErrNoNode", err)
		}
	}},
	{"a named node moves the pin; a full or draining one is refused", func(t *testing.T, b *balancer.Balancer) {
		a := must(t, b, "alice")
		other := "node-1"
		if a.Node().Name == other {
			other = "node-2"
		}
		l, err := b.AcquireOn("alice", balancer.SSH, "c", other, balancer.ByUser)
		if err != nil || l.Node().Name != other {
			t.Fatalf("alice onto %s: %v %v", other, l, err)
		}
		if got := must(t, b, "alice"); got.Node().Name != other {
			t.Fatalf("alice's next session on %s, want %s", got.Node().Name, other)
		}
		if err := b.Drain(other); err != nil {
			t.Fatal(err)
		}
		if _, err := b.AcquireOn("bob", balancer.SSH, "c", other, balancer.ByUser); !errors.Is(err, balancer.ErrDraining) {
			t.Fatalf("bob onto draining %s: %v", other, err)
		}
		if _, err := b.AcquireOn("alice", balancer.SSH, "c", other, balancer.ByUser); err != nil {
			t.Fatalf("alice onto her own draining node: %v", err)
		}
		if _, err := b.AcquireOn("bob", balancer.SSH, "c", "node-9", balancer.ByUser); !errors.Is(err, balancer.ErrUnknownNode) {
			t.Fatalf("bob onto no such node: %v", err)
		}
	}},
	{"an aborted first session leaves no pin", func(t *testing.T, b *balancer.Balancer) {
		l := must(t, b, "alice")
		l.Abort()
		waitFor(t, "alice's pin to go", func() bool { _, ok := b.Pinned("alice", balancer.SSH); return !ok })
	}},
	{"ops pin a user; unpin lets the rules place her again", func(t *testing.T, b *balancer.Balancer) {
		a := must(t, b, "alice")
		other := "node-3"
		if a.Node().Name == other {
			other = "node-2"
		}
		if err := b.Pin("alice", other); err != nil {
			t.Fatal(err)
		}
		if got := must(t, b, "alice"); got.Node().Name != other {
			t.Fatalf("alice after the ops pin on %s, want %s", got.Node().Name, other)
		}
		var by balancer.PinOrigin
		for _, p := range b.Pins() {
			if p.User == "alice" {
				by = p.By
			}
		}
		if by != balancer.ByOps {
			t.Fatalf("alice's pin chosen by %q, want ops", by)
		}
		if err := b.Pin("bob", "node-9"); !errors.Is(err, balancer.ErrUnknownNode) {
			t.Fatalf("pin to no such node: %v", err)
		}
	}},
}

func TestRulesAloneAndShared(t *testing.T) {
	srv := redistest.Start(t)
	for i, tc := range ruleCases {
		t.Run("alone/"+tc.name, func(t *testing.T) {
			b := balancer.New(balancer.Config{}, balancer.Options{Logger: zaptest.NewLogger(t)})
			upPool(b)
			tc.run(t, b)
		})
		t.Run("redis/"+tc.name, func(t *testing.T) {
			r := newReplicaWith(t, srv.URL(), "gw", 30*time.Second, "{case"+string(rune('a'+i))+"}:")
			tc.run(t, r.bal)
		})
	}
}

// upPool gives b the test nodes, up.
func upPool(b *balancer.Balancer) {
	var nodes []balancer.Node
	for _, n := range nodeNames {
		nodes = append(nodes, balancer.Node{Name: n, SSH: n + ":22", HTTP: n + ":8000"})
	}
	b.SetNodes(nodes)
	for _, n := range nodeNames {
		b.SetHealth(n, balancer.SSH, true, "ok")
		b.SetHealth(n, balancer.HTTP, true, "ok")
	}
}

func must(t *testing.T, b *balancer.Balancer, user string) *balancer.Lease {
	t.Helper()
	l, err := b.Acquire(user, balancer.SSH, "192.0.2.1:5000")
	if err != nil {
		t.Fatalf("Acquire(%s): %v", user, err)
	}
	return l
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
