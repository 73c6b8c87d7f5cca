package balancer

import (
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
	if n, ok := b.Pinned(claim, proto); ok {
		return claim, n.Name
	}
	if !prefix || claim == "" {
		return claim, ""
	}
	p := protoIndex(proto)
	b.mu.RLock()
	defer b.mu.RUnlock()
	now := b.now()
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
