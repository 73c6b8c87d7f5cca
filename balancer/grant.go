// Granting a lease once the rules have decided: the pin table's entries,
// the facts the rules read from this gateway's memory, and the sweep of
// pins that expired.

package balancer

import (
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
)

// ID is the session's identifier, unique within this balancer.
func (l *Lease) ID() uint64 { return l.id }

// User is the login name the lease was taken for.
func (l *Lease) User() string { return l.user }

// Node is the node the session goes to.
func (l *Lease) Node() Node { return l.node.Node }

// Repinned names the node the user was pinned to before it was gone or
// left the pool, when this lease is the first since; otherwise "".
func (l *Lease) Repinned() string { return l.repinned }

// grantLocked records a lease with the given id on v's node, the user's
// pin becoming pin.
func (b *Balancer) grantLocked(user string, v verdict, q query, client string, id uint64, pin Pin) *Lease {
	u := b.userLocked(user)
	n := b.nodes[v.node]
	u.pin = pin
	if v.created {
		u.elsewhere = nil
	}
	l := &Lease{
		b: b, id: id, user: user, node: n, proto: q.proto, client: client,
		started: q.now, repinned: v.lost, created: v.created,
	}
	if v.lost != "" && v.created {
		b.log.Info("user re-pinned", zap.String("user", user), zap.String("from", v.lost), zap.String("node", n.Name), zap.String("protocol", string(q.proto)))
	}
	u.live++
	p := q.proto.index()
	n.sessions[p]++
	n.users[user]++
	b.refreshLocked(n)
	b.leases[l.id] = l
	b.started[p].Add(1)
	return l
}

// userLocked returns the user's state, created if new.
func (b *Balancer) userLocked(name string) *userState {
	u := b.users[name]
	if u == nil {
		u = &userState{name: name}
		b.users[name] = u
	}
	return u
}

// userPinLocked is the user's pin as this gateway knows it.
func (b *Balancer) userPinLocked(user string) userPin {
	if u := b.users[user]; u != nil {
		return userPin{Pin: u.pin, live: u.live}
	}
	return userPin{}
}

// pinHoldsLocked reports whether u's pin holds at now (rule 2).
func (b *Balancer) pinHoldsLocked(u *userState, now time.Time) bool {
	return userPin{Pin: u.pin, live: u.live}.valid(now)
}

// localFacts is the pool as this gateway sees it alone.
func (b *Balancer) localFacts(proto Protocol, now time.Time) facts {
	return localFacts{b: b, p: proto.index(), now: now}
}

// localFacts answers a decision from the balancer's own state; b.mu is
// held.
type localFacts struct {
	b   *Balancer
	p   int
	now time.Time
}

func (f localFacts) lookup(name string) (nodeFacts, bool) {
	n := f.b.nodes[name]
	if n == nil {
		return nodeFacts{}, false
	}
	max := f.b.conf().MaxSessionsPerNode
	return nodeFacts{
		up:       n.upFor(f.p),
		alive:    f.b.aliveFor(n, f.p, f.now, n.sessions),
		draining: n.draining,
		full:     max > 0 && n.counted() >= max,
	}, true
}

func (f localFacts) leastLoaded(avoid []string, anyAlive bool) string {
	if !anyAlive {
		if n := f.b.leastLoadedLocked(f.p, avoid); n != nil {
			return n.Name
		}
		return ""
	}
	// Rare (every check fails): score the nodes that are alive afresh.
	b := f.b
	scores := make([]float64, len(b.order))
	for i, n := range b.order {
		scores[i] = math.Inf(1)
		if !n.removed && n.serves(f.p) && b.checkedAlive(&n.checks, f.p, f.now, n.sessions) && !slices.Contains(avoid, n.Name) {
			scores[i] = b.openScore(n.weight, n.counted(), n.draining, b.resourceScoreLocked(n))
		}
	}
	if i := leastOf(scores, b.rand); i >= 0 {
		return b.order[i].Name
	}
	return ""
}

// maybeSweepLocked forgets users whose grace has passed, at most once per
// half grace period, so memory tracks active users rather than all users
// ever seen.
func (b *Balancer) maybeSweepLocked(now time.Time) {
	if now.Sub(b.lastSweep) < b.conf().AffinityGrace/2 {
		return
	}
	b.lastSweep = now
	for name, u := range b.users {
		if u.live == 0 && !now.Before(u.pin.Until) {
			delete(b.users, name)
		}
	}
}

func (b *Balancer) pinnedLocked(user string, p int) *node {
	u := b.users[user]
	if u == nil {
		return nil
	}
	now := b.now()
	if !b.pinHoldsLocked(u, now) {
		return nil
	}
	if n := b.nodes[u.pin.Node]; n != nil && b.aliveFor(n, p, now, n.sessions) {
		return n
	}
	return nil
}
