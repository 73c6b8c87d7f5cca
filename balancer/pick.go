package balancer

import (
	"math"
	"slices"
	"time"
)

// pick returns the node the user's next session would go to, without
// taking a lease or changing any state: the routing rules alone, for the
// tests and the placement benchmark (front ends use Acquire).
func (b *Balancer) pick(user string) (Node, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if u := b.users[user]; u != nil && b.pinValidLocked(u, time.Time{}, 0) {
		return u.node.Node, nil
	}
	n := b.leastLoadedLocked(0, nil)
	if n == nil {
		return Node{}, ErrNoNode
	}
	return n.Node, nil
}

// pinValidLocked reports whether u's pin may be used for a session of
// protocol index p (rule 2). now may be zero; the clock is read only when
// the user has no live session.
func (b *Balancer) pinValidLocked(u *userState, now time.Time, p int) bool {
	n := u.node
	if n == nil || !n.upFor(p) || n.removed {
		return false
	}
	if u.live > 0 {
		return true
	}
	if now.IsZero() {
		now = b.now()
	}
	return now.Sub(u.idleSince) < b.cfg.AffinityGrace
}

// leastLoadedLocked returns the least-loaded node that is up for protocol
// index p, not draining and not full and not named in avoid, breaking ties
// uniformly at random (rule 3), or nil.
//
// It scans b.loads[p], a dense copy of each node's weighted load (+Inf where
// the node may take no new user) kept current by refreshLocked: the first
// pass finds the least load and counts the nodes that have it, one random
// draw selects among them in a second pass. A draw per tie, or a walk over
// the node structs, costs several times more on a large, quiet pool.
func (b *Balancer) leastLoadedLocked(p int, avoid []string) *node {
	loads := b.loads[p]
	if len(avoid) > 0 {
		// Rare (a front end could not reach a node): scan a copy in which
		// the avoided nodes take no new user, keeping the common scan tight.
		loads = slices.Clone(loads)
		for i, n := range b.order {
			if slices.Contains(avoid, n.Name) {
				loads[i] = math.Inf(1)
			}
		}
	}
	best, ties := math.Inf(1), 0
	for _, load := range loads {
		switch {
		case load < best:
			best, ties = load, 1
		case load == best:
			ties++
		}
	}
	if math.IsInf(best, 1) {
		return nil
	}
	k := 0
	if ties > 1 {
		k = b.rand(ties)
	}
	for i, load := range loads {
		if load == best {
			if k == 0 {
				return b.order[i]
			}
			k--
		}
	}
	return nil // unreachable: the loads cannot change under b.mu
}

// refreshLocked recomputes n's entries in b.loads after any change to its
// health, drain state or session counts.
func (b *Balancer) refreshLocked(n *node) {
	if n.removed {
		return
	}
	total := n.total()
	open := !n.draining && (b.cfg.MaxSessionsPerNode == 0 || total < b.cfg.MaxSessionsPerNode)
	score := math.Inf(1)
	if open {
		score = b.scoreLocked(n, total)
	}
	for p := range b.loads {
		load := math.Inf(1)
		if n.upFor(p) {
			load = score
		}
		b.loads[p][n.idx] = load
	}
}

// Route returns the node for a request that belongs to no user yet (a
// browser that has not logged in): the node named prefer when it is in the
// pool and up for proto, otherwise the least-loaded node that could take a
// new session of proto. It takes no lease and changes no state.
func (b *Balancer) Route(proto Protocol, prefer string) (Node, error) {
	p := protoIndex(proto)
	b.mu.RLock()
	defer b.mu.RUnlock()
	if n := b.nodes[prefer]; n != nil && n.upFor(p) {
		return n.Node, nil
	}
	n := b.leastLoadedLocked(p, nil)
	if n == nil {
		return Node{}, ErrNoNode
	}
	return n.Node, nil
}

// Usable reports whether the named node is in the pool and up for proto
// (draining nodes are usable: they still serve their pinned users).
func (b *Balancer) Usable(name string, proto Protocol) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n := b.nodes[name]
	return n != nil && n.upFor(protoIndex(proto))
}
