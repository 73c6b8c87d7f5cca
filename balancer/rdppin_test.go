package balancer

import (
	"errors"
	"testing"
)

// rdpPool is n1..n3 with SSH and RDP up.
func rdpPool(t *testing.T) *Balancer {
	t.Helper()
	b, _ := newTest(t, Config{})
	var nodes []Node
	for _, n := range []string{"n1", "n2", "n3"} {
		nodes = append(nodes, Node{Name: n, SSH: n + ":22", RDP: n + ":3389"})
	}
	b.SetNodes(nodes)
	for _, n := range nodes {
		b.SetHealth(n.Name, SSH, true, "ok")
		b.SetHealth(n.Name, RDP, true, "ok")
	}
	return b
}

func TestPinnedUserWithoutLease(t *testing.T) {
	b := rdpPool(t)
	if u, n := b.PinnedUser("alice", false, RDP); u != "alice" || n != "" {
		t.Fatalf("unknown alice: %q %q, want alice and no node", u, n)
	}
	// alice's SSH session on n2 pins her there.
	b.SetHealth("n1", SSH, false, "down")
	l := acquire(t, b, "alice")
	b.SetHealth("n1", SSH, true, "ok")
	if l.Node().Name != "n2" {
		t.Fatalf("alice on %s", l.Node().Name)
	}
	if u, n := b.PinnedUser("alice", false, RDP); u != "alice" || n != "n2" {
		t.Fatalf("alice: %q %q, want n2", u, n)
	}
	// Asking takes no lease and creates no user.
	if b.UserSessions("alice") != 1 || b.Started(RDP) != 0 {
		t.Fatalf("PinnedUser changed state: %d sessions, %d RDP started", b.UserSessions("alice"), b.Started(RDP))
	}
	b.PinnedUser("mallory", true, RDP)
	if len(b.users) != 1 {
		t.Fatalf("users after asking for mallory: %d", len(b.users))
	}
	// A cookie cut to 9 characters finds the one pinned user it starts.
	acquire(t, b, "christopher")
	if u, _ := b.PinnedUser("christoph", true, RDP); u != "christopher" {
		t.Fatalf("prefix christoph: %q, want christopher", u)
	}
	if u, _ := b.PinnedUser("christoph", false, RDP); u != "christoph" {
		t.Fatalf("exact christoph: %q", u)
	}
	acquire(t, b, "christophe")
	if u, n := b.PinnedUser("christoph", true, RDP); u != "christoph" || n != "" {
		t.Fatalf("ambiguous prefix: %q %q, want the claim and no node", u, n)
	}
	// A node whose RDP check fails still holds its users (rule 5); once
	// its RDP server is gone (a dial failed) it is no answer for RDP.
	b.SetHealth("n2", RDP, false, "refused")
	if _, n := b.PinnedUser("alice", false, RDP); n != "n2" {
		t.Fatalf("alice with n2's RDP check failing: %q, want n2", n)
	}
	b.NodeFailed("n2", RDP)
	if _, n := b.PinnedUser("alice", false, RDP); n != "" {
		t.Fatalf("alice with n2's RDP gone: %q", n)
	}
}

func TestAcquireOnForRDP(t *testing.T) {
	b := rdpPool(t)
	// An unpinned user gets the lease on the node named, not the
	// least-loaded one.
	acquire(t, b, "x").Node() // n1 is now busier than n2, n3
	l, err := b.AcquireOn("bob", RDP, "c", "n1", ByBalancer)
	if err != nil || l.Node().Name != "n1" {
		t.Fatalf("AcquireOn n1: %v %v", l, err)
	}
	if st := b.Nodes()[0]; st.Sessions.Of(RDP) != 1 {
		t.Fatalf("n1 RDP sessions %d", st.Sessions.Of(RDP))
	}
	// The pin follows: bob's next SSH session goes to n1.
	if s := acquire(t, b, "bob"); s.Node().Name != "n1" {
		t.Fatalf("bob's SSH on %s", s.Node().Name)
	}
	// A user pinned elsewhere moves to where the session lives.
	a := acquire(t, b, "alice")
	other := "n2"
	if a.Node().Name == "n2" {
		other = "n3"
	}
	l2, err := b.AcquireOn("alice", RDP, "c", other, ByBalancer)
	if err != nil || l2.Node().Name != other {
		t.Fatalf("alice AcquireOn %s: %v %v", other, l2, err)
	}
	if s := acquire(t, b, "alice"); s.Node().Name != other {
		t.Fatalf("alice's next SSH session on %s, want %s where her RDP session lives", s.Node().Name, other)
	}
	if _, err := b.AcquireOn("carol", RDP, "c", "nope", ByBalancer); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node: %v", err)
	}
	// A draining node takes no new user, but still its pinned ones.
	if err := b.Drain("n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AcquireOn("carol", RDP, "c", "n1", ByBalancer); !errors.Is(err, ErrDraining) {
		t.Fatalf("carol on draining n1: %v", err)
	}
	if l, err := b.AcquireOn("bob", RDP, "c", "n1", ByBalancer); err != nil || l.Node().Name != "n1" {
		t.Fatalf("bob on draining n1: %v %v", l, err)
	}
}
