package balancer

import (
	"errors"
	"testing"
)

func TestRDPSessionsAndHealth(t *testing.T) {
	b, _ := newTest(t, Config{}, "n1", "n2")
	b.SetNodes([]Node{{Name: "n1", SSH: "n1:22", RDP: "n1:3389"}, {Name: "n2", SSH: "n2:22", RDP: "n2:3389"}})
	if _, err := b.Acquire("alice", RDP, "c"); !errors.Is(err, ErrNoNode) {
		t.Fatalf("RDP before any RDP check: %v, want ErrNoNode", err)
	}
	b.SetHealth("n1", RDP, true, "ok")
	b.SetHealth("n2", RDP, false, "connection refused")
	l, err := b.Acquire("alice", RDP, "c")
	if err != nil || l.Node().Name != "n1" {
		t.Fatalf("alice over RDP: %v %v, want n1 (n2's RDP is down)", l, err)
	}
	// Her SSH session follows her to the same node.
	if s := acquire(t, b, "alice"); s.Node().Name != "n1" {
		t.Fatalf("alice's SSH on %s, want n1", s.Node().Name)
	}
	// n2 still takes SSH users: its sshd is up.
	if s := acquire(t, b, "bob"); s.Node().Name != "n2" {
		t.Fatalf("bob's SSH on %s, want n2", s.Node().Name)
	}
	st := b.Nodes()
	if st[0].Sessions.Of(RDP) != 1 || st[0].Sessions.Of(SSH) != 1 || !st[0].Check(RDP).Up || st[1].Check(RDP).Up || st[1].Check(RDP).Detail != "connection refused" {
		t.Fatalf("snapshot %+v", st)
	}
	l.Release()
	if b.Ended(RDP) != 1 || b.Started(RDP) != 1 {
		t.Fatalf("RDP counters %d started %d ended", b.Started(RDP), b.Ended(RDP))
	}
}
