package redisstate

import (
	"slices"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestHeldSessionsAreSeenNotCounted: a connection held for no proven user
// through one gateway shows on its node through the other (ops and
// scale-in see it), makes no pin and does not fill the node for the
// rules.
func TestHeldSessionsAreSeenNotCounted(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)
	held, err := a.bal.Hold("node-1", balancer.RDP, "192.0.2.9:4000")
	if err != nil {
		t.Fatal(err)
	}
	node1 := func() balancer.NodeStatus {
		for _, n := range b.bal.Nodes() {
			if n.Name == "node-1" {
				return n
			}
		}
		t.Fatal("node-1 missing")
		return balancer.NodeStatus{}
	}
	testutil.Eventually(t, 2*time.Second, "B to see the held connection on node-1", func() bool {
		n := node1()
		return n.Sessions.Total() == 1 && slices.Contains(n.Users, balancer.Unverified)
	})
	if p := b.bal.Pins(); len(p) != 0 {
		t.Fatalf("a held connection made pins: %+v", p)
	}
	b.bal.SetConfig(balancer.Config{AffinityGrace: 10 * time.Minute, MaxSessionsPerNode: 1})
	l, err := b.bal.AcquireOn("alice", balancer.SSH, "192.0.2.1:5000", "node-1", balancer.ByUser)
	if err != nil {
		t.Fatalf("alice on node-1 holding one unverified connection, max_sessions_per_node 1: %v", err)
	}
	defer l.Release()
	held.Release()
	testutil.Eventually(t, 2*time.Second, "B to see node-1 with alice's session only", func() bool {
		n := node1()
		return n.Sessions.Total() == 1 && !slices.Contains(n.Users, balancer.Unverified)
	})
	if p := b.bal.Pins(); len(p) != 1 || p[0].User != "alice" {
		t.Fatalf("pins after the release: %+v, want alice's only", p)
	}
}
