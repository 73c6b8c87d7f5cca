package balancer

import (
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

// Repinned names the node the user was pinned to before it went down or
// left the pool, when this lease is the first since; otherwise "".
func (l *Lease) Repinned() string { return l.repinned }

// Acquire chooses a node for the user's new session following the routing
// rules and takes a lease on it. client is the peer address, kept for ops.
// Nodes named in avoid are not chosen: a front end that could not connect
// to a node retries with it avoided, and a user pinned there is moved (the
// lease's Repinned names the node). It returns ErrNoNode when no node can
// take the session.
func (b *Balancer) Acquire(user string, proto Protocol, client string, avoid ...string) (*Lease, error) {
	if b.sh != nil {
		if l, err, decided := b.acquireShared(user, proto, client, avoid); decided {
			return l, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.maybeSweepLocked(now)
	u := b.userLocked(user)
	created := false
	p := protoIndex(proto)
	// A live pin this protocol cannot use (the node's hub is down, or the
	// front end could not reach the node) moves the user, but only once
	// another node can take them: a failed Acquire changes nothing.
	move := u.node != nil && b.pinValidLocked(u, now, 0) && (!u.node.upFor(p) || slices.Contains(avoid, u.node.Name))
	if move || !b.pinValidLocked(u, now, p) {
		n := b.leastLoadedLocked(p, avoid)
		if n == nil {
			if u.live == 0 && u.node == nil && u.lost == "" {
				delete(b.users, user)
			}
			return nil, ErrNoNode
		}
		if move && u.lost == "" {
			u.lost = u.node.Name
		}
		b.pinLocked(u, n, ByBalancer)
		created = true
	}
	b.nextID++
	return b.grantLocked(u, proto, client, now, created, b.nextID), nil
}

// grantLocked records a lease with the given id on u's pinned node.
func (b *Balancer) grantLocked(u *userState, proto Protocol, client string, now time.Time, created bool, id uint64) *Lease {
	l := &Lease{
		b: b, id: id, user: u.name, node: u.node, proto: proto, client: client,
		started: now, repinned: u.lost, created: created,
	}
	if u.lost != "" && created {
		b.log.Info("user re-pinned", zap.String("user", u.name), zap.String("from", u.lost), zap.String("node", l.node.Name), zap.String("protocol", string(proto)))
	}
	if u.lost != "" && proto == SSH {
		// Only the SSH front end can tell the user (a banner line); a
		// browser session that moved them first leaves it for that.
		u.lost = ""
	}
	u.live++
	l.node.sessions[protoIndex(proto)]++
	l.node.users[u.name]++
	b.refreshLocked(l.node)
	b.leases[l.id] = l
	b.started[protoIndex(proto)].Add(1)
	return l
}

// UserSessions counts the user's live sessions, on any node.
func (b *Balancer) UserSessions(user string) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if u := b.users[user]; u != nil {
		return u.live
	}
	return 0
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

// pinLocked pins u to n (again, harmlessly, when it is pinned there); by
// says who chose n, and is kept when the pin does not move.
func (b *Balancer) pinLocked(u *userState, n *node, by PinOrigin) {
	if u.node != nil {
		delete(u.node.pinned, u.name)
	}
	if u.node != n || u.by == "" {
		u.by = by
	}
	u.node = n
	n.pinned[u.name] = u
}

// Release ends the session: it stops counting toward the node's load, and
// when it was the user's last, the affinity grace starts. Calling Release
// more than once is harmless.
func (l *Lease) Release() { l.end(false) }

// Abort ends a lease whose session never started (the node refused the
// login, the user failed to authenticate there). Unlike Release it does not
// leave the user pinned to a node the lease itself chose.
func (l *Lease) Abort() { l.end(true) }

func (l *Lease) end(abort bool) {
	b := l.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	delete(b.leases, l.id)
	b.ended[protoIndex(l.proto)].Add(1)
	n := l.node
	n.sessions[protoIndex(l.proto)]--
	if n.users[l.user]--; n.users[l.user] <= 0 {
		delete(n.users, l.user)
	}
	if n.total() == 0 {
		n.idle = b.now()
	}
	b.refreshLocked(n)
	if b.sh != nil {
		b.queueRelease(SharedRelease{LeaseID: l.id, User: l.user, Node: n.Name, Abort: abort && l.created, Lost: l.repinned})
	}
	u := b.users[l.user]
	if u == nil {
		return
	}
	u.live--
	if u.live > 0 {
		return
	}
	u.idleSince = b.now()
	if abort && l.created && u.node == n {
		delete(n.pinned, u.name)
		u.node = nil
		if l.repinned != "" {
			u.lost = l.repinned // tell the user on the lease that does start
		}
		if u.lost == "" {
			delete(b.users, l.user)
		}
	}
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
		if u.live == 0 && now.Sub(u.idleSince) >= b.cfg.AffinityGrace {
			if u.node != nil {
				delete(u.node.pinned, name)
			}
			delete(b.users, name)
		}
	}
}
