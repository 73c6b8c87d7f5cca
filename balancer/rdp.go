package balancer

import (
	"fmt"
	"strings"
)

// PinnedUser answers, without a lease and without changing any state,
// where a front end should route a connection whose user is only claimed
// (an RDP routing cookie): it returns the user the claim names and the
// node that user is pinned to by a live pin usable for proto, or node ""
// when there is none.
//
// With prefix set, the claim may be a login name cut short (mstsc sends
// at most 9 characters): when no user has exactly that name, the single
// user with a live pin whose name starts with it is taken; when several
// do, the claim is returned as it is, with no node.
//
// With shared state it answers from this gateway's own view: the pins of
// its own sessions and the pins it has learnt from the shared state.
func (b *Balancer) PinnedUser(claim string, prefix bool, proto Protocol) (user, node string) {
	p := protoIndex(proto)
	b.mu.RLock()
	defer b.mu.RUnlock()
	now := b.now()
	if u := b.users[claim]; u != nil && b.pinValidLocked(u, now, p) {
		return claim, u.node.Name
	}
	if b.sh != nil {
		if name, ok := b.sh.pins.get(claim, now); ok {
			if n := b.nodes[name]; n != nil && n.upFor(p) {
				return claim, name
			}
		}
	}
	if !prefix || claim == "" {
		return claim, ""
	}
	found, at := "", ""
	for name, u := range b.users {
		if !strings.HasPrefix(name, claim) || !b.pinValidLocked(u, now, p) {
			continue
		}
		if found != "" {
			return claim, ""
		}
		found, at = name, u.node.Name
	}
	if found == "" {
		return claim, ""
	}
	return found, at
}

// AcquireOn takes a lease for the user's session on the named node, the
// one a front end has already relayed the connection to (an RDP
// connection, routed while its user was only claimed, that the node has
// since kept past authentication). The user's pin moves there if it was
// elsewhere (Lease.Repinned names the node it left), since the session
// now lives there. It fails with ErrUnknownNode when the node is not in
// the pool, and with ErrNoNode when it cannot take a new user (down for
// proto, draining or full) and the user was not pinned there.
func (b *Balancer) AcquireOn(user string, proto Protocol, client, node string) (*Lease, error) {
	b.mu.RLock()
	_, known := b.nodes[node]
	avoid := make([]string, 0, len(b.order))
	for _, n := range b.order {
		if n.Name != node {
			avoid = append(avoid, n.Name)
		}
	}
	b.mu.RUnlock()
	if !known {
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	l, err := b.Acquire(user, proto, client, avoid...)
	if err != nil {
		return nil, err
	}
	if l.Node().Name != node { // the node set changed in between
		l.Abort()
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	return l, nil
}
