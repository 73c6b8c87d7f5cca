package balancer

import (
	"sort"
	"strings"
	"time"
)

// This file holds the questions front ends and ops ask without taking a
// lease or changing any state.

// Peek returns the node the user's next session of proto would go to,
// following the routing rules, without taking a lease or changing any
// state. A front end that must hear a node's verdict before the user
// counts (a password the node checks) peeks, logs in there, and then
// takes the lease with AcquireOn. With shared state it asks the shared
// state (another gateway may have placed the user a moment ago), and
// this gateway's copy of the pool's pins when it cannot.
func (b *Balancer) Peek(user string, proto Protocol, avoid ...string) (Node, error) {
	if b.sh != nil {
		if n, err, decided := b.peekShared(user, proto, avoid); decided {
			return n, err
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	now := b.now()
	v, err := decide(b.localFacts(proto, now), b.userPinLocked(user), query{proto: proto, avoid: avoid, now: now})
	if err != nil {
		return Node{}, err
	}
	return b.nodes[v.node].Node, nil
}

// pick is Peek for an SSH session, for the tests and the placement
// benchmark.
func (b *Balancer) pick(user string) (Node, error) { return b.Peek(user, SSH) }

// Pinned names the node the user's next session of proto would go to by
// affinity (rule 2), when the user holds a pin that holds to a node that
// serves proto, without taking a lease or changing any state. It reads
// this gateway's own state (with shared state, its copy of the pool's
// pins, never a round trip), so a front end can route a request that has
// not proven its user yet to the node that holds the user's login.
func (b *Balancer) Pinned(user string, proto Protocol) (Node, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if n := b.pinnedLocked(user, proto.index()); n != nil {
		return n.Node, true
	}
	return Node{}, false
}

// PinnedUser answers, without a lease and without changing any state,
// where a front end should route a connection whose user is only claimed
// (an RDP routing cookie): it returns the user the claim names and the
// node that user is pinned to by a pin usable for proto, or node ""
// when there is none.
//
// With prefix set, the claim may be a login name cut short (mstsc sends
// at most 9 characters): when no user has exactly that name, the single
// user with a pin whose name starts with it is taken; when several do,
// the claim is returned as it is, with no node.
func (b *Balancer) PinnedUser(claim string, prefix bool, proto Protocol) (user, node string) {
	p := proto.index()
	b.mu.RLock()
	defer b.mu.RUnlock()
	if n := b.pinnedLocked(claim, p); n != nil {
		return claim, n.Name
	}
	if !prefix || claim == "" {
		return claim, ""
	}
	found, at := "", ""
	for name := range b.users {
		if !strings.HasPrefix(name, claim) {
			continue
		}
		n := b.pinnedLocked(name, p)
		if n == nil {
			continue
		}
		if found != "" {
			return claim, ""
		}
		found, at = name, n.Name
	}
	if found == "" {
		return claim, ""
	}
	return found, at
}

// Route returns the node for a request that belongs to no user yet (a
// browser that has not logged in): the node named prefer when it is in the
// pool and up for proto, otherwise the least-loaded node that could take a
// new session of proto. It takes no lease and changes no state.
func (b *Balancer) Route(proto Protocol, prefer string) (Node, error) {
	p := proto.index()
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

// Usable reports whether the named node is in the pool and still serves
// proto for the sessions it holds: it is not gone (rule 5), even while its
// checks fail for now; draining nodes are usable too.
func (b *Balancer) Usable(name string, proto Protocol) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n := b.nodes[name]
	return n != nil && b.aliveFor(n, proto.index(), b.now(), n.sessions)
}

// Choosable lists, in discovery order, the nodes the user may name for a
// session of proto now: those up for it that are neither draining nor
// full, and the node the user is pinned to whatever its drain or fill.
func (b *Balancer) Choosable(user string, proto Protocol) []Node {
	b.mu.RLock()
	defer b.mu.RUnlock()
	now := b.now()
	f, u := b.localFacts(proto, now), b.userPinLocked(user)
	var out []Node
	for _, n := range b.order {
		if _, err := decide(f, u, query{proto: proto, named: n.Name, by: ByUser, now: now}); err == nil {
			out = append(out, n.Node)
		}
	}
	return out
}

// UserSessions counts the user's live sessions through this gateway, on
// any node.
func (b *Balancer) UserSessions(user string) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if u := b.users[user]; u != nil {
		return u.live
	}
	return 0
}

// Started counts the sessions of proto ever started; Ended those ended.
func (b *Balancer) Started(proto Protocol) uint64 { return b.started[proto.index()].Load() }

// Ended counts the sessions of proto that ended (released or aborted).
func (b *Balancer) Ended(proto Protocol) uint64 { return b.ended[proto.index()].Load() }

// Sessions returns a snapshot of the live sessions, oldest first; with
// shared state, every gateway's.
func (b *Balancer) Sessions() []SessionInfo {
	if b.sh != nil && !b.sh.degraded.Load() {
		if v, err := b.sharedView(); err == nil {
			out := append([]SessionInfo(nil), v.Sessions...)
			sort.SliceStable(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
			return out
		}
	}
	replica := ""
	if b.sh != nil {
		replica = b.sh.store.Replica()
	}
	b.mu.RLock()
	out := make([]SessionInfo, 0, len(b.leases))
	for _, l := range b.leases {
		out = append(out, SessionInfo{ID: l.id, User: l.user, Node: l.node.Name, Protocol: l.proto, Client: l.client, Started: l.started, Replica: replica})
	}
	b.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Nodes returns a snapshot of the node set in discovery order. With shared
// state, sessions, users, pins and drains are the whole pool's; health is
// this gateway's.
func (b *Balancer) Nodes() []NodeStatus {
	local := b.localNodes()
	if b.sh == nil || b.sh.degraded.Load() {
		return local
	}
	v, err := b.sharedView()
	if err != nil {
		return local
	}
	return mergeShared(local, v)
}

func (b *Balancer) localNodes() []NodeStatus {
	b.mu.RLock()
	defer b.mu.RUnlock()
	now := b.now()
	pinned := make(map[*node]int, len(b.order))
	for _, u := range b.users {
		if n := b.nodes[u.pin.Node]; n != nil && b.pinHoldsLocked(u, now) {
			pinned[n]++
		}
	}
	out := make([]NodeStatus, 0, len(b.order))
	for _, n := range b.order {
		users := make([]string, 0, len(n.users))
		for u := range n.users {
			users = append(users, u)
		}
		sort.Strings(users)
		var idle time.Time
		if n.sessions.Total() == 0 {
			idle = n.idle
		}
		st := NodeStatus{
			Node:        n.Node,
			State:       n.state(),
			Sessions:    n.sessions,
			Users:       users,
			Pinned:      pinned[n],
			Changed:     n.changed,
			IdleSince:   idle,
			Load:        n.load,
			LoadStale:   n.load.Measured() && b.stale(n.load, now),
			LoadError:   n.loadErr,
			LoadErrorAt: n.loadErrAt,
		}
		for p := range st.Checks {
			c := &n.checks[p]
			st.Checks[p] = CheckStatus{Up: c.up, Checked: c.checked, Detail: c.detail, Gone: n.serves(p) && !b.aliveFor(n, p, now, n.sessions)}
		}
		out = append(out, st)
	}
	return out
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

// HubNode names the node whose JupyterHub listens on addr (its Node.HTTP),
// or "" when no node in the set has that address. It reads this gateway's
// own node set only, never the shared state, so it is cheap enough for
// every new connection to a hub.
func (b *Balancer) HubNode(addr string) string {
	if addr == "" {
		return "" // a node without a hub has HTTP ""
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, n := range b.order {
		if n.HTTP == addr {
			return n.Name
		}
	}
	return ""
}
