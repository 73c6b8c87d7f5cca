package httpgw

import (
	"sync/atomic"
	"testing"

	"github.com/poolgate/poolgate/balancer"
)

// sharedViewBalancer is a balancer sharing its state: its Nodes is the
// whole pool's view, a round trip to the shared state (Redis) under the
// view lock that may take seconds when Redis is slow. It counts the
// calls.
type sharedViewBalancer struct {
	*balancer.Balancer
	views *atomic.Int32
}

func (b sharedViewBalancer) Nodes() []balancer.NodeStatus {
	b.views.Add(1)
	return b.Balancer.Nodes()
}

// Item 4 of issue 12: a new TLS connection to a hub under certificate
// pinning finds the hub's node from the gateway's own node set, never by
// asking the shared state for the whole pool.
func TestHubDialAsksNoSharedState(t *testing.T) {
	var views atomic.Int32
	e := newEnvWith(t, Config{}, true, func(b *balancer.Balancer) Balancer {
		return sharedViewBalancer{Balancer: b, views: &views}
	})
	for _, u := range []string{"alice", "bob", "carol"} {
		if code, body, _ := e.get(e.browser(), "/user/"+u+"/"); code != 200 {
			t.Fatalf("%s through pinned TLS hubs: %d %q", u, code, body)
		}
	}
	if n := views.Load(); n != 0 {
		t.Fatalf("dialing the hubs asked the shared state for the node set %d times, want 0", n)
	}
}
