package balancer

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Errors of AcquireOn, besides ErrUnknownNode.
var (
	// ErrNodeDown means the node is in the pool but cannot take a session
	// of the protocol now (its check fails).
	ErrNodeDown = errors.New("node is down")
	// ErrDraining means the node takes no new users and the user is not
	// already on it.
	ErrDraining = errors.New("node is draining")
	// ErrNodeFull means the node has max_sessions_per_node sessions and
	// the user is not already on it.
	ErrNodeFull = errors.New("node is full")
)

// Peek returns the node the user's next session of proto would go to,
// following the routing rules, without taking a lease or changing any
// state. A front end that must hear a node's verdict before the user
// counts (a password the node checks) peeks, logs in there, and then
// takes the lease with AcquireOn. With shared state the user's pin is
// asked of the shared state; a new user is placed by this gateway's own
// view.
func (b *Balancer) Peek(user string, proto Protocol, avoid ...string) (Node, error) {
	p := protoIndex(proto)
	if b.sh != nil && !b.sh.degraded.Load() {
		if name, ok := b.sharedPin(user); ok {
			b.mu.RLock()
			n := b.nodes[name]
			usable := n != nil && n.upFor(p) && !slices.Contains(avoid, name)
			b.mu.RUnlock()
			if usable {
				return n.Node, nil
			}
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if u := b.users[user]; u != nil && b.pinValidLocked(u, b.now(), p) && !slices.Contains(avoid, u.node.Name) {
		return u.node.Node, nil
	}
	n := b.leastLoadedLocked(p, avoid)
	if n == nil {
		return Node{}, ErrNoNode
	}
	return n.Node, nil
}

// sharedPin is the user's pin in the shared state: the local pin cache,
// else one round trip. ok is false when there is none or it cannot be
// asked.
func (b *Balancer) sharedPin(user string) (string, bool) {
	b.mu.Lock()
	name, ok := b.sh.pins.get(user, b.now())
	b.mu.Unlock()
	if ok {
		return name, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	name, err := b.sh.store.PinOf(ctx, user, b.now())
	if err != nil {
		b.setDegraded(err)
		return "", false
	}
	return name, name != ""
}

// AcquireOn takes a lease for the user's new session on the named node,
// pinning the user there (moving their pin if it pointed elsewhere; their
// sessions elsewhere go on). The node must be up for proto; a draining or
// full node takes the user only if they are pinned to it already. It
// returns ErrUnknownNode, ErrNodeDown, ErrDraining or ErrNodeFull,
// wrapped with the node's name.
//
// by says who chose the node: ByUser for a user who named it, ByBalancer
// for a node the balancer chose (Peek) before the user was proven.
func (b *Balancer) AcquireOn(user string, proto Protocol, client, node string, by PinOrigin) (*Lease, error) {
	if b.sh != nil {
		if l, err, decided := b.acquireSharedOn(user, proto, client, node, by); decided {
			return l, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.maybeSweepLocked(now)
	n, err := b.canTakeLocked(user, proto, node)
	if err != nil {
		return nil, err
	}
	u := b.userLocked(user)
	created := u.node != n
	b.pinLocked(u, n, by)
	if by != ByBalancer {
		u.by = by // naming the node one is on makes the choice one's own
	}
	b.nextID++
	return b.grantLocked(u, proto, client, now, created, b.nextID), nil
}

// canTakeLocked checks that the named node may take a session of the
// user's (see AcquireOn).
func (b *Balancer) canTakeLocked(user string, proto Protocol, node string) (*node, error) {
	n := b.nodes[node]
	if n == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	if !n.upFor(protoIndex(proto)) {
		return nil, fmt.Errorf("%w: %s", ErrNodeDown, node)
	}
	u := b.users[user]
	onIt := u != nil && u.node == n && b.pinValidLocked(u, b.now(), protoIndex(proto))
	if !onIt && n.draining {
		return nil, fmt.Errorf("%w: %s", ErrDraining, node)
	}
	if !onIt && b.cfg.MaxSessionsPerNode > 0 && n.total() >= b.cfg.MaxSessionsPerNode {
		return nil, fmt.Errorf("%w: %s", ErrNodeFull, node)
	}
	return n, nil
}

// acquireSharedOn is AcquireOn through the shared state: the claim names
// the node, and the shared state checks drain and fullness against the
// whole pool and moves the pin for every gateway. decided is false when
// the shared state could not be asked.
func (b *Balancer) acquireSharedOn(user string, proto Protocol, client, node string, by PinOrigin) (l *Lease, err error, decided bool) {
	sh := b.sh
	if sh.degraded.Load() {
		return nil, nil, false
	}
	p := protoIndex(proto)
	b.mu.Lock()
	n := b.nodes[node]
	switch {
	case n == nil:
		b.mu.Unlock()
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, node), true
	case !n.upFor(p):
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNodeDown, node), true
	}
	epoch := sh.pins.epoch
	b.nextID++
	c := Claim{
		User: user, Proto: proto, Client: client, LeaseID: b.nextID, Now: b.now(), Node: node, By: by,
		Grace: b.cfg.AffinityGrace, MaxSessionsPerNode: b.cfg.MaxSessionsPerNode, SessionCost: b.cfg.Load.SessionCost,
		Nodes: []Candidate{{Name: n.Name, Weight: n.weight, Up: true}},
	}
	res, err := b.claimLocked(c)
	defer b.mu.Unlock()
	if err != nil {
		return nil, nil, false
	}
	if res.Node == "" {
		switch res.Refused {
		case "full":
			return nil, fmt.Errorf("%w: %s", ErrNodeFull, node), true
		case "down":
			return nil, fmt.Errorf("%w: %s", ErrNodeDown, node), true
		}
		return nil, fmt.Errorf("%w: %s", ErrDraining, node), true
	}
	sh.pins.put(user, res.Node, b.now(), epoch)
	if n = b.nodes[res.Node]; n == nil {
		b.queueRelease(SharedRelease{LeaseID: c.LeaseID, User: user, Node: res.Node, Abort: res.Created, Lost: res.Lost})
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, node), true
	}
	u := b.userLocked(user)
	b.pinLocked(u, n, res.By)
	return b.grantLocked(u, proto, client, c.Now, res.Created, c.LeaseID), nil, true
}

// Choosable lists, in discovery order, the nodes the user may name for a
// session of proto now: those up for it that are neither draining nor
// full, and the node the user is pinned to whatever its drain or fill.
func (b *Balancer) Choosable(user string, proto Protocol) []Node {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Node
	for _, n := range b.order {
		if _, err := b.canTakeLocked(user, proto, n.Name); err == nil {
			out = append(out, n.Node)
		}
	}
	return out
}
