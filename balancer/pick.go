package balancer

import (
	"math"
	"slices"
	"time"
)

// Pick returns the node the user's next session would go to, without
// taking a lease or changing any state. Front ends use Acquire; Pick serves
// previews (e.g. refusing a login early when no node is available).
func (b *Balancer) Pick(user string) (Node, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if u := b.users[user]; u != nil && b.pinValidLocked(u, time.Time{}) {
		return u.node.Node, nil
	}
	n := b.leastLoadedLocked(nil)
	if n == nil {
		return Node{}, ErrNoNode
	}
	return n.Node, nil
}

// pinValidLocked reports whether u's pin may be used (rule 2). now may be
// zero; the clock is read only when the user has no live session.
func (b *Balancer) pinValidLocked(u *userState, now time.Time) bool {
	n := u.node
	if n == nil || !n.up || n.removed {
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

// leastLoadedLocked returns the least-loaded node that is up, not draining
// and not full and not named in avoid, breaking ties uniformly at random
// (rule 3), or nil.
//
// It scans b.loads, a dense copy of each node's weighted load (+Inf where
// the node may take no new user) kept current by refreshLocked: the first
// pass finds the least load and counts the nodes that have it, one random
// draw selects among them in a second pass. A draw per tie, or a walk over
// the node structs, costs several times more on a large, quiet pool.
func (b *Balancer) leastLoadedLocked(avoid []string) *node {
	loads := b.loads
	if len(avoid) > 0 {
		// Rare (a front end could not reach a node): scan a copy in which
		// the avoided nodes take no new user, keeping the common scan tight.
		loads = slices.Clone(b.loads)
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

// refreshLocked recomputes n's entry in b.loads after any change to its
// health, drain state or session counts.
func (b *Balancer) refreshLocked(n *node) {
	if n.removed {
		return
	}
	load := math.Inf(1)
	total := n.sessions[0] + n.sessions[1]
	if n.up && !n.draining && (b.cfg.MaxSessionsPerNode == 0 || total < b.cfg.MaxSessionsPerNode) {
		load = float64(total) / n.weight
	}
	b.loads[n.idx] = load
}
