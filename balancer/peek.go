package balancer

// Pinned names the node the user's next session of proto would go to by
// affinity (rule 2), when the user holds a valid pin to a node that is up
// for proto, without taking a lease or changing any state. It reads this
// gateway's own state and, with shared state, the local pin cache only
// (never a round trip), so a front end can route a request that has not
// proven its user yet to the node that holds the user's login.
func (b *Balancer) Pinned(user string, proto Protocol) (Node, bool) {
	p := protoIndex(proto)
	b.mu.RLock()
	defer b.mu.RUnlock()
	if u := b.users[user]; u != nil && b.pinValidLocked(u, b.now(), p) {
		return u.node.Node, true
	}
	if b.sh != nil && b.sh.pins.live {
		if e, ok := b.sh.pins.entries[user]; ok && b.now().Sub(e.at) <= pinCacheTTL {
			if n := b.nodes[e.node]; n != nil && n.upFor(p) && !n.removed {
				return n.Node, true
			}
		}
	}
	return Node{}, false
}

// NodeNames lists the names of the nodes in this gateway's node set, in
// no particular order. It reads local state only.
func (b *Balancer) NodeNames() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]string, 0, len(b.order))
	for _, n := range b.order {
		out = append(out, n.Name)
	}
	return out
}
