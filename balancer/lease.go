package balancer

import (
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Lease is one live session on a node. Front ends take it with Acquire
// before relaying and Release it when the session ends; until then the
// session counts toward the node's load and keeps the user pinned there.
type Lease struct {
	b        *Balancer
	id       uint64
	user     string
	node     *node
	proto    Protocol
	client   string
	started  time.Time
	repinned string // node the user lost before this lease, if any
	created  bool   // this lease created the user's pin
	done     bool   // released; protected by b.mu
}

// ID is the session's identifier, unique within this balancer.
func (l *Lease) ID() uint64 { return l.id }

// User is the login name the lease was taken for.
func (l *Lease) User() string { return l.user }

// Node is the node the session goes to.
func (l *Lease) Node() Node { return l.node.Node }

// Repinned names the node the user was pinned to before it was gone or
// left the pool, when this lease is the first since; otherwise "".
func (l *Lease) Repinned() string { return l.repinned }

// Acquire chooses a node for the user's new session following the routing
// rules and takes a lease on it. client is the peer address, kept for ops.
// Nodes named in avoid are not chosen: a front end that could not connect
// to a node retries with it avoided, and a user pinned there is moved (the
// lease's Repinned names the node). It returns ErrNoNode when no node can
// take the session.
func (b *Balancer) Acquire(user string, proto Protocol, client string, avoid ...string) (*Lease, error) {
	return b.acquire(user, client, query{proto: proto, avoid: avoid})
}

// AcquireOn takes a lease for the user's new session on the named node,
// pinning the user there (moving their pin if it pointed elsewhere; their
// sessions elsewhere go on). The node must be up for proto; a draining or
// full node, or one whose checks fail for now, takes the user only if
// they are pinned to it already. It returns ErrUnknownNode, ErrNodeDown,
// ErrDraining or ErrNodeFull, wrapped with the node's name.
//
// by says who chose the node: ByUser for a user who named it, ByBalancer
// for a node the balancer chose (Peek) before the user was proven.
func (b *Balancer) AcquireOn(user string, proto Protocol, client, node string, by PinOrigin) (*Lease, error) {
	return b.acquire(user, client, query{proto: proto, named: node, by: by})
}

func (b *Balancer) acquire(user, client string, q query) (*Lease, error) {
	if b.sh != nil {
		if l, err, decided := b.acquireShared(user, client, q); decided {
			return l, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	q.now = b.now()
	b.maybeSweepLocked(q.now)
	v, err := decide(b.localFacts(q.proto, q.now), b.userPinLocked(user), q)
	if err != nil {
		return nil, err
	}
	if b.sh != nil {
		b.decidedAloneLocked(user, v)
	}
	b.nextID++
	return b.grantLocked(user, v, q, client, b.nextID, pinAfterGrant(b.userPinLocked(user).Pin, v, q.proto, time.Time{})), nil
}

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
	max := f.b.cfg.MaxSessionsPerNode
	return nodeFacts{
		up:       n.upFor(f.p),
		alive:    f.b.aliveFor(n, f.p, f.now, n.sessions),
		draining: n.draining,
		full:     max > 0 && n.sessions.Total() >= max,
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
			scores[i] = b.openScore(n.weight, n.sessions.Total(), n.draining, b.resourceScoreLocked(n))
		}
	}
	if i := leastOf(scores, b.rand); i >= 0 {
		return b.order[i].Name
	}
	return ""
}

// Release ends the session: it stops counting toward the node's load, and
// when it was the user's last, the affinity grace starts. Calling Release
// more than once is harmless.
func (l *Lease) Release() { l.end(false, false) }

// Abort ends a lease whose session never started (the node refused the
// login, the user failed to authenticate there). Unlike Release it does not
// leave the user pinned to a node the lease itself chose.
func (l *Lease) Abort() { l.end(true, false) }

// Fail ends a session that failed on the node's side (the node stopped
// answering, its connection broke). While the node's checks fail too,
// that is proof it is gone: its users' next sessions go elsewhere (rule
// 5). A session that ends while the checks pass is simply released.
func (l *Lease) Fail() { l.end(false, true) }

func (l *Lease) end(abort, failed bool) {
	b := l.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	now := b.now()
	delete(b.leases, l.id)
	p := l.proto.index()
	b.ended[p].Add(1)
	n := l.node
	n.sessions[p]--
	if n.users[l.user]--; n.users[l.user] <= 0 {
		delete(n.users, l.user)
	}
	if n.sessions.Total() == 0 {
		n.idle = now
	}
	if failed {
		switch {
		case !n.checks[own].up:
			n.checks[own].failed = true
		case !n.checks[p].up:
			n.checks[p].failed = true
		}
	}
	b.refreshLocked(n)
	if b.sh != nil {
		b.queueRelease(SharedRelease{LeaseID: l.id, User: l.user, Node: n.Name, Proto: l.proto, Abort: abort && l.created, Lost: l.repinned})
	}
	u := b.users[l.user]
	if u == nil {
		return
	}
	u.live--
	pin, keep := pinAfterRelease(u.pin, n.Name, u.live, abort && l.created, l.repinned, now, b.cfg.AffinityGrace)
	if !keep && u.live == 0 {
		delete(b.users, l.user)
		return
	}
	u.pin = pin
}

// maybeSweepLocked forgets users whose grace has passed, at most once per
// half grace period, so memory tracks active users rather than all users
// ever seen.
func (b *Balancer) maybeSweepLocked(now time.Time) {
	if now.Sub(b.lastSweep) < b.cfg.AffinityGrace/2 {
		return
	}
	b.lastSweep = now
	for name, u := range b.users {
		if u.live == 0 && !now.Before(u.pin.Until) {
			delete(b.users, name)
		}
	}
}
