package redisstate

import (
	"errors"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestChoiceIsSharedAcrossGateways: a session taken on a named node
// through one gateway moves the user's pin for every gateway, and
// refusals for a drained or full node come from the whole pool's state.
func TestChoiceIsSharedAcrossGateways(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)
	first := a.acquire(t, "alice")
	other := "node-1"
	if first.Node().Name == other {
		other = "node-2"
	}
	if p, err := b.bal.Peek("alice", balancer.SSH); err != nil || p.Name != first.Node().Name {
		t.Fatalf("B peeks %v %v for alice, pinned through A to %s", p, err, first.Node().Name)
	}
	chosen, err := a.bal.AcquireOn("alice", balancer.SSH, "192.0.2.1:5000", other, balancer.ByUser)
	if err != nil || chosen.Node().Name != other {
		t.Fatalf("AcquireOn %s through A: %v %v", other, chosen, err)
	}
	testutil.Eventually(t, 2*time.Second, "B to follow alice's choice", func() bool {
		l := b.acquire(t, "alice")
		defer l.Release()
		return l.Node().Name == other
	})
	if p, _ := b.bal.Peek("alice", balancer.SSH); p.Name != other {
		t.Fatalf("B peeks %s for alice after her choice of %s", p.Name, other)
	}
	if err := a.bal.Drain("node-3"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, "B to refuse bob on drained node-3", func() bool {
		_, err := b.bal.AcquireOn("bob", balancer.SSH, "c", "node-3", balancer.ByUser)
		return errors.Is(err, balancer.ErrDraining)
	})
	if b.bal.UserSessions("bob") != 0 {
		t.Fatal("a refused choice left bob a session")
	}
}
