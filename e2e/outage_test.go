package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestRedisOutageKeepsUsersOnTheirNodes is issue 30's acceptance: two
// 'poolgate serve' processes share a real redis-server; users hold
// sessions through gateway A; Redis is killed; the same users log in
// through gateway B again and again for longer than any cache of old, and
// land on the node of their session every time. New users placed during
// the outage are reported; after Redis returns both gateways agree within
// a few seconds, and each gateway's log has one line for the outage's
// start and one for its end.
func TestRedisOutageKeepsUsersOnTheirNodes(t *testing.T) {
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	fresh := []string{"grace", "heidi", "ivan", "judy"}
	sp := newSharedPool(t, append(append([]string{}, users...), fresh...))
	a, b := sp.start("gw-a"), sp.start("gw-b")

	home := map[string]string{}
	for _, u := range users {
		h := sp.hold(a, u)
		defer h.close()
		home[u] = h.node
	}
	testutil.Eventually(t, 5*time.Second, "B to know A's six pins", func() bool {
		var pins admin.PinsJSON
		getJSON(t, "http://"+b.admAddr+"/api/pins", &pins)
		return len(pins.Pins) == len(users)
	})

	sp.redis.Stop()
	outage := time.Now()
	moved := 0
	rounds := 0
	for time.Since(outage) < 12*time.Second {
		for _, u := range users {
			if n := sp.nodeOf(b, u); n != home[u] {
				moved++
				t.Errorf("during the outage %s through gw-b landed on %s; her session is on %s", u, n, home[u])
			}
		}
		rounds++
	}
	t.Logf("%d logins through gw-b during a %s outage, %d away from the user's session", rounds*len(users), time.Since(outage).Round(time.Second), moved)
	if st := b.answer().State; !st.Degraded {
		t.Errorf("gw-b's state during the outage: %+v, want degraded", st)
	}

	// New users during the outage, each with a session through both
	// gateways: each gateway places them by its own view. The spread is
	// reported; a split must be reconciled below.
	spread := map[string][]string{}
	for _, u := range fresh {
		ha, hb := sp.hold(a, u), sp.hold(b, u)
		defer ha.close()
		defer hb.close()
		spread[u] = []string{ha.node, hb.node}
	}
	t.Logf("new users during the outage (via gw-a, via gw-b): %v", spread)

	sp.redis.Restart() // empty, as a Redis that lost its data
	back := time.Now()
	testutil.Eventually(t, 4*sharedTTL, "both gateways to leave degraded mode and agree on every pin", func() bool {
		if a.answer().State.Degraded || b.answer().State.Degraded {
			return false
		}
		var pa, pb admin.PinsJSON
		getJSON(t, "http://"+a.admAddr+"/api/pins", &pa)
		getJSON(t, "http://"+b.admAddr+"/api/pins", &pb)
		return fmt.Sprint(pinsByUser(pa)) == fmt.Sprint(pinsByUser(pb)) && len(pa.Pins) >= len(users)+len(fresh)
	})
	t.Logf("gateways agreed %s after Redis returned", time.Since(back).Round(100*time.Millisecond))
	var pins admin.PinsJSON
	getJSON(t, "http://"+b.admAddr+"/api/pins", &pins)
	for _, p := range pins.Pins {
		if want, ok := home[p.User]; ok && p.Node != want {
			t.Errorf("after the outage %s is pinned to %s; her session is on %s", p.User, p.Node, want)
		}
	}
	for _, u := range fresh {
		if n1, n2 := sp.nodeOf(a, u), sp.nodeOf(b, u); n1 != n2 {
			t.Errorf("after the outage %s through gw-a on %s, through gw-b on %s", u, n1, n2)
		}
	}
	// A user placed apart: the pool's first choice won, and the gateway
	// whose choice lost says in its log and /api/pins where her other
	// session is.
	for u, nodes := range spread {
		if nodes[0] == nodes[1] {
			continue
		}
		won := pinsByUser(pins)[u]
		other := nodes[0]
		if other == won {
			other = nodes[1]
		}
		told := false
		for _, r := range []*replicaProc{a, b} {
			var rp admin.PinsJSON
			getJSON(t, "http://"+r.admAddr+"/api/pins", &rp)
			for _, p := range rp.Pins {
				if p.User == u && p.Node == won && slices.Contains(p.Elsewhere, other) &&
					strings.Contains(r.logs.String(), "the pool's first choice wins") {
					told = true
				}
			}
		}
		if !told {
			t.Errorf("%s was placed on %s and %s during the outage; no gateway says her session on %s is apart from her pin on %s", u, nodes[0], nodes[1], other, won)
		}
	}
	for _, r := range []*replicaProc{a, b} {
		log := r.logs.String()
		if n := strings.Count(log, "shared state unreachable"); n != 1 {
			t.Errorf("%s logged the outage's start %d times, want once", r.name, n)
		}
		if n := strings.Count(log, "shared state reachable again"); n != 1 {
			t.Errorf("%s logged the outage's end %d times, want once", r.name, n)
		}
		if n := strings.Count(log, "failed to dial"); n > 1 {
			t.Errorf("%s let the Redis client log %d dial failures, want at most one", r.name, n)
		}
	}
}

// pinsByUser is user → node of a pins answer.
func pinsByUser(p admin.PinsJSON) map[string]string {
	out := map[string]string{}
	for _, pin := range p.Pins {
		out[pin.User] = pin.Node
	}
	return out
}
