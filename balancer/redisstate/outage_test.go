package redisstate

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/internal/testutil"
)

// Issue 30: during a Redis outage every gateway routes by its whole copy
// of the pool's pins, so a user with a live session through gateway A
// lands on that node through gateway B too, for as long as the outage
// lasts; a user both gateways placed while it lasted is reconciled when
// Redis returns: the pin the pool agreed on first wins, later sessions
// follow it, and ops see where the other sessions are.
func TestRedisOutageKeepsEveryUsersNode(t *testing.T) {
	srv := redistest.Start(t)
	ttl := 3 * time.Second
	a, b := newReplica(t, srv.URL(), "gw-a", ttl), newReplica(t, srv.URL(), "gw-b", ttl)
	home := map[string]string{}
	for i := range 6 {
		user := fmt.Sprintf("user%d", i)
		l := a.acquire(t, user)
		defer l.Release()
		home[user] = l.Node().Name
	}
	// B hears of A's pins through the notices.
	testutil.Eventually(t, 2*time.Second, "B to know A's six pins", func() bool { return len(b.bal.Pins()) == 6 })

	srv.Stop()
	// Logins through B for longer than any cache of old (5 s): each
	// lands on the user's node.
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		for user, node := range home {
			l := b.acquire(t, user)
			if l.Node().Name != node {
				t.Errorf("during the outage %s through B went to %s, her session is on %s", user, l.Node().Name, node)
			}
			l.Release()
		}
	}
	if _, degraded, _ := b.bal.SharedStatus(); !degraded {
		t.Fatal("B does not report the shared state unreachable")
	}
	// A new user through both gateways: each places her by its own view
	// (they may differ); her first session through A is the first the
	// pool hears of when Redis is back.
	fa := a.acquire(t, "frank")
	defer fa.Release()
	// Put frank somewhere else through B: B's own view, with A's users'
	// pins known, may or may not agree; force a split by failing A's node
	// for frank at B.
	fb, err := b.bal.Acquire("frank", balancer.SSH, "c", fa.Node().Name)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Release()
	if fb.Node() == fa.Node() {
		t.Fatal("the test needs frank split across two nodes")
	}

	srv.Restart() // empty, as a Redis that lost its data
	testutil.Eventually(t, 4*ttl, "both gateways to agree on frank and count every session", func() bool {
		_, da, _ := a.bal.SharedStatus()
		_, db, _ := b.bal.SharedStatus()
		if da || db {
			return false
		}
		pa, oka := a.bal.Pinned("frank", balancer.SSH)
		pb, okb := b.bal.Pinned("frank", balancer.SSH)
		total := 0
		for _, n := range b.bal.Nodes() {
			total += n.Sessions.Total()
		}
		return oka && okb && pa.Name == pb.Name && total == 8
	})
	won, _ := a.bal.Pinned("frank", balancer.SSH)
	other := fa.Node().Name
	if won.Name == other {
		other = fb.Node().Name
	}
	// Later logins through either gateway follow the pool's choice.
	for _, r := range []*replica{a, b} {
		if l := r.acquire(t, "frank"); l.Node().Name != won.Name {
			t.Errorf("frank through %s went to %s, the pool agreed on %s", r.store.Replica(), l.Node().Name, won.Name)
		} else {
			l.Release()
		}
	}
	// The gateway whose choice lost says where frank's other session is.
	var seen bool
	for _, r := range []*replica{a, b} {
		for _, p := range r.bal.Pins() {
			if p.User == "frank" && p.Node == won.Name && slices.Contains(p.Elsewhere, other) {
				seen = true
			}
		}
	}
	if !seen {
		t.Errorf("no gateway's pins say frank also has a session on %s", other)
	}
	// And every user still has her node through both.
	for user, node := range home {
		for _, r := range []*replica{a, b} {
			if n, ok := r.bal.Pinned(user, balancer.SSH); !ok || n.Name != node {
				t.Errorf("after the outage %s through %s is pinned to %v, want %s", user, r.store.Replica(), n.Name, node)
			}
		}
	}
}
