package balancer

import (
	"errors"
	"testing"
	"time"
)

func TestPeekChangesNothing(t *testing.T) {
	b, _ := newTest(t, Config{}, "n1", "n2")
	n, err := b.Peek("alice", SSH)
	if err != nil || n.Name != "n1" {
		t.Fatalf("Peek: %v %v", n, err)
	}
	if b.UserSessions("alice") != 0 || len(b.Sessions()) != 0 || b.Nodes()[0].Pinned != 0 {
		t.Fatal("Peek took a lease or a pin")
	}
	acquire(t, b, "bob") // n1 (first of the tie)
	if n, _ := b.Peek("alice", SSH); n.Name != "n2" {
		t.Fatalf("Peek for a new user with bob on n1: %s", n.Name)
	}
	if n, _ := b.Peek("bob", SSH); n.Name != "n1" {
		t.Fatalf("Peek for bob, pinned to n1: %s", n.Name)
	}
	if n, _ := b.Peek("bob", SSH, "n1"); n.Name != "n2" {
		t.Fatalf("Peek for bob avoiding n1: %s", n.Name)
	}
}

func TestAcquireOn(t *testing.T) {
	b, _ := newTest(t, Config{MaxSessionsPerNode: 2}, "n1", "n2", "n3")
	l := acquire(t, b, "alice") // n1
	// alice chooses n2: her pin moves; her session on n1 goes on.
	l2, err := b.AcquireOn("alice", SSH, "c", "n2", ByUser)
	if err != nil || l2.Node().Name != "n2" {
		t.Fatalf("AcquireOn n2: %v %v", l2, err)
	}
	if got := acquire(t, b, "alice").Node().Name; got != "n2" {
		t.Fatalf("alice's next plain session on %s, want n2 (her pin moved)", got)
	}
	if st := b.Nodes(); st[0].Sessions.Of(SSH) != 1 || st[1].Sessions.Of(SSH) != 2 {
		t.Fatalf("sessions %d on n1 and %d on n2", st[0].Sessions.Of(SSH), st[1].Sessions.Of(SSH))
	}
	l.Release()
	// n2 is full: bob may not go there; alice, pinned there, may.
	if _, err := b.AcquireOn("bob", SSH, "c", "n2", ByUser); !errors.Is(err, ErrNodeFull) {
		t.Fatalf("bob onto a full node: %v", err)
	}
	if _, err := b.AcquireOn("alice", SSH, "c", "n2", ByUser); err != nil {
		t.Fatalf("alice onto her own full node: %v", err)
	}
	_ = b.Drain("n3")
	if _, err := b.AcquireOn("bob", SSH, "c", "n3", ByUser); !errors.Is(err, ErrDraining) {
		t.Fatalf("bob onto a draining node: %v", err)
	}
	b.SetHealth("n1", SSH, false, "down")
	if _, err := b.AcquireOn("bob", SSH, "c", "n1", ByUser); !errors.Is(err, ErrNodeDown) {
		t.Fatalf("bob onto a node that is down: %v", err)
	}
	if _, err := b.AcquireOn("bob", SSH, "c", "n9", ByUser); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("bob onto no such node: %v", err)
	}
	if b.UserSessions("bob") != 0 {
		t.Fatal("refusals left bob a session")
	}
}

// TestChoose: a user's choice without a session (the users' page) moves
// the pin by the same rule as a named node at login, and records it as
// the user's own.
func TestChoose(t *testing.T) {
	b, c := newTest(t, Config{MaxSessionsPerNode: 1, AffinityGrace: time.Minute}, "n1", "n2", "n3", "n4")
	l := acquire(t, b, "alice") // n1
	if err := b.Choose("alice", "n2", HTTP); err != nil {
		t.Fatalf("Choose n2: %v", err)
	}
	if n, ok := b.Pinned("alice", SSH); !ok || n.Name != "n2" {
		t.Fatalf("alice pinned to %v %v, want n2", n.Name, ok)
	}
	if b.UserSessions("alice") != 1 || b.Nodes()[0].Sessions.Of(SSH) != 1 {
		t.Fatal("Choose took a lease or ended the session open on n1")
	}
	pins := b.Pins()
	if len(pins) != 1 || pins[0].By != ByUser || pins[0].Node != "n2" {
		t.Fatalf("pins %+v, want alice on n2 by user", pins)
	}
	if got := acquire(t, b, "alice").Node().Name; got != "n2" {
		t.Fatalf("alice's next session on %s, want n2", got)
	}
	l.Release()

	// The nodes refused are those Choosable leaves out.
	if _, err := b.AcquireOn("bob", SSH, "c", "n1", ByBalancer); err != nil { // n1 is now full
		t.Fatal(err)
	}
	_ = b.Drain("n3")
	b.SetHealth("n4", HTTP, false, "hub down")
	for node, want := range map[string]error{"n1": ErrNodeFull, "n3": ErrDraining, "n4": ErrNodeDown, "n9": ErrUnknownNode} {
		if err := b.Choose("carol", node, HTTP); !errors.Is(err, want) {
			t.Errorf("Choose %s: %v, want %v", node, err, want)
		}
	}
	if _, ok := b.Pinned("carol", SSH); ok || len(b.Pins()) != 2 {
		t.Fatalf("refused choices left a pin: %+v", b.Pins())
	}
	// A node up for SSH whose hub is down is choosable for SSH only.
	if err := b.Choose("carol", "n4", SSH); err != nil {
		t.Fatalf("Choose n4 for SSH: %v", err)
	}
	// alice may choose her own full node again.
	if err := b.Choose("alice", "n2", HTTP); err != nil {
		t.Fatalf("alice choosing her own full node: %v", err)
	}

	// Without a session the choice lasts the grace.
	c.Add(2 * time.Minute)
	if _, ok := b.Pinned("carol", SSH); ok {
		t.Fatal("carol's choice outlived the grace with no session")
	}
}
