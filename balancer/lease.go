// A session's life as front ends see it: Acquire (or AcquireOn) before
// relaying, then Release, Abort or Fail.

package balancer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

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

// Unverified is the user a held session counts under (Hold): a name no
// login can have (internal/username allows no parentheses), which ops see
// as such in the sessions and the node's users.
const Unverified = "(unverified)"

// Hold counts a session that is already open on the named node for no
// proven user: a plain RDP connection the node kept past its logon, whose
// user name was only claimed. It counts toward the node's sessions for
// ops, the dashboard and protection from scale-in, under the user
// Unverified, and for nothing the routing rules read: no pin is made or
// moved, no per-user count or limit is touched, and neither
// max_sessions_per_node nor the node's placement score counts it, so
// connections anyone can open cannot lock users out of a node. No rule
// applies (the connection is there); the node must be in the pool, else
// ErrUnknownNode. Release the lease when the connection ends.
func (b *Balancer) Hold(node string, proto Protocol, client string) (*Lease, error) {
	if !slices.Contains(Protocols(), proto) {
		return nil, fmt.Errorf("unknown protocol %q", proto)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nodes[node]
	if n == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	now := b.now()
	b.nextID++
	l := &Lease{b: b, id: b.nextID, user: Unverified, node: n, proto: proto, client: client, started: now}
	p := proto.index()
	n.sessions[p]++
	n.unverified++
	n.users[Unverified]++
	b.leases[l.id] = l
	b.started[p].Add(1)
	if b.sh != nil {
		rec := LeaseRecord{ID: l.id, User: Unverified, Node: n.Name, Proto: proto, Client: client, Started: now}
		b.queue(func(ctx context.Context) error { return b.record(ctx, rec) })
	}
	return l, nil
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
	if l.user == Unverified {
		n.unverified--
	}
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
	pin, keep := pinAfterRelease(u.pin, n.Name, u.live, abort && l.created, l.repinned, now, b.conf().AffinityGrace)
	if !keep && u.live == 0 {
		delete(b.users, l.user)
		return
	}
	u.pin = pin
}

// ErrShared is returned by Adopt and AdoptPin when the balancer shares
// its state: the shared state already holds every gateway's sessions and
// pins, so there is nothing to adopt.
var ErrShared = errors.New("the routing state is shared: nothing to adopt")

// Adopt takes a lease for a session that is already open on the named
// node, relayed by another process: the gateway this one took over from
// in an upgrade, which keeps relaying it. No routing rule applies (the
// session exists): the node may be draining, full or failing its checks.
// The lease counts toward the node's load and keeps the user pinned as a
// lease from Acquire does; the user's pin moves to node, chosen by by,
// only when they hold none that holds. started is when the session began;
// client is its peer address. Release the lease when the other process
// says the session ended. It returns ErrUnknownNode for a node not in the
// pool, and ErrShared with shared state.
func (b *Balancer) Adopt(user, node string, proto Protocol, client string, started time.Time, by PinOrigin) (*Lease, error) {
	if b.sh != nil {
		return nil, ErrShared
	}
	if !slices.Contains(Protocols(), proto) {
		return nil, fmt.Errorf("unknown protocol %q", proto)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nodes[node] == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	pin := Pin{Node: node, By: by}
	if u := b.users[user]; u != nil && b.pinHoldsLocked(u, b.now()) {
		pin = u.pin
	}
	if pin.By == "" {
		pin.By = ByBalancer
	}
	b.nextID++
	return b.grantLocked(user, verdict{node: node, by: pin.By}, query{proto: proto, now: started}, client, b.nextID, pin), nil
}
