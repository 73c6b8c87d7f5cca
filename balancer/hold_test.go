package balancer

import (
	"errors"
	"slices"
	"testing"
)

// A held session (a plain RDP connection whose user is only claimed)
// counts on its node for ops and scale-in, and for nothing the rules read.
func TestHoldCountsForOpsNotForRules(t *testing.T) {
	b, _ := newTest(t, Config{MaxSessionsPerNode: 1})
	b.SetNodes([]Node{{Name: "n1", SSH: "n1:22", RDP: "n1:3389"}})
	b.SetHealth("n1", SSH, true, "ok")
	b.SetHealth("n1", RDP, true, "ok")

	var held []*Lease
	for range 3 {
		l, err := b.Hold("n1", RDP, "192.0.2.7:5000")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	st := b.Nodes()[0]
	if st.Sessions.Total() != 3 || !slices.Contains(st.Users, Unverified) || !st.IdleSince.IsZero() {
		t.Fatalf("node with 3 held connections: sessions %v, users %v, idle since %v; want 3 sessions under %q and not idle",
			st.Sessions, st.Users, st.IdleSince, Unverified)
	}
	if len(b.Pins()) != 0 || b.UserSessions(Unverified) != 0 {
		t.Fatalf("held connections made pins %v or user sessions %d", b.Pins(), b.UserSessions(Unverified))
	}
	// max_sessions_per_node is 1: held connections do not fill the node.
	l := acquire(t, b, "alice")
	if l.Node().Name != "n1" {
		t.Fatalf("alice on %s", l.Node().Name)
	}
	if _, err := b.Acquire("bob", SSH, ""); !errors.Is(err, ErrNoNode) {
		t.Fatalf("bob with n1 full of alice's one session: %v, want ErrNoNode", err)
	}
	if got := len(b.Sessions()); got != 4 {
		t.Fatalf("sessions listed: %d, want 4", got)
	}
	for _, h := range held {
		h.Release()
	}
	l.Release()
	if st := b.Nodes()[0]; st.Sessions.Total() != 0 || st.IdleSince.IsZero() || slices.Contains(st.Users, Unverified) {
		t.Fatalf("after release: %+v", st)
	}
	if _, err := b.Hold("gone", RDP, ""); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("Hold on an unknown node: %v", err)
	}
}
