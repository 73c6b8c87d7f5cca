package balancer

import (
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"
)

// Node is one member of the pool as discovery sees it.
type Node struct {
	Name string // unique, stable name (config name or instance computer name)
	SSH  string // host:port of the node's sshd
	HTTP string // host:port of the node's JupyterHub; empty if none
	RDP  string // host:port of the node's RDP server (Windows); empty if none
	// Weight scales the node's capacity (e.g. its vCPU count). Zero or
	// negative means 1.
	Weight float64
	// Metrics and GPUMetrics are host:port of the node's Prometheus
	// node_exporter and NVIDIA dcgm-exporter; empty if none. The balancer
	// does not read them: the load scraper does, and reports to SetLoad.
	Metrics, GPUMetrics string
}

// State is a node's routing state as ops see it.
type State string

// Node states. A node that is down is reported down even if it is draining.
const (
	StateUp       State = "up"
	StateDown     State = "down"
	StateDraining State = "draining"
)

// node is the balancer's record of one pool member.
type node struct {
	Node
	weight   float64
	idx      int            // position in Balancer.order and Balancer.loads
	checks   [nProtos]check // the node's own check (SSH) and its services'
	draining bool
	removed  bool
	changed  time.Time      // last change of State
	idle     time.Time      // when the node last had no session (set while it has none)
	sessions PerProtocol    // live leases through this gateway
	users    map[string]int // user → live leases on this node
	load     Load           // last measured load; NoLoad until the first
	history  *loadRing      // recent samples for ops; nil until the first
}

// SetNodes replaces the node set. New nodes start down until their first
// health report; nodes that keep their name keep their state, sessions and
// pins; nodes that left lose their pins (their open sessions are left to
// end on their own and still count until released).
func (b *Balancer) SetNodes(nodes []Node) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	seen := make(map[string]bool, len(nodes))
	order := make([]*node, 0, len(nodes))
	for _, nd := range nodes {
		if nd.Name == "" || seen[nd.Name] {
			continue
		}
		seen[nd.Name] = true
		n, ok := b.nodes[nd.Name]
		if !ok {
			n = &node{changed: now, idle: now, users: make(map[string]int), load: NoLoad}
			b.nodes[nd.Name] = n
			b.log.Info("node added", zap.String("node", nd.Name), zap.String("ssh", nd.SSH), zap.String("http", nd.HTTP))
		}
		n.Node = nd
		n.weight = nd.Weight
		if n.weight <= 0 {
			n.weight = 1
		}
		order = append(order, n)
	}
	for name, n := range b.nodes {
		if !seen[name] {
			n.removed = true
			delete(b.nodes, name)
			b.log.Info("node removed", zap.String("node", name))
		}
	}
	b.order = order
	for p := range b.loads {
		b.loads[p] = make([]float64, len(order))
	}
	for i, n := range order {
		n.idx = i
		b.refreshLocked(n)
	}
}

// Drain stops new users from being placed on the node. Users pinned to it
// still reach it and existing sessions continue.
func (b *Balancer) Drain(name string) error { return b.setDrain(name, true) }

// Undrain lets the node take new users again.
func (b *Balancer) Undrain(name string) error { return b.setDrain(name, false) }

func (b *Balancer) setDrain(name string, on bool) error {
	if b.sh != nil {
		if err := b.drainShared(name, on); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownNode, name)
	}
	b.setDrainLocked(n, on)
	return nil
}

func (b *Balancer) setDrainLocked(n *node, on bool) {
	if n.draining != on {
		n.draining = on
		n.changed = b.now()
		b.refreshLocked(n)
		b.log.Info("node drain changed", zap.String("node", n.Name), zap.Bool("draining", on))
	}
}

// CheckStatus is one of a node's checks, for ops.
type CheckStatus struct {
	Up, Checked bool   // Checked once it reported
	Detail      string // last probe's detail
	// Gone: pins to the node no longer hold for the protocol (a dial,
	// login or session failed, or it stayed down past repin_after).
	Gone bool
}

// NodeStatus is a snapshot of one node for ops.
type NodeStatus struct {
	Node
	State    State
	Sessions PerProtocol // live sessions by protocol
	Users    []string    // users with a live session on the node, sorted
	Pinned   int         // users pinned to the node, including idle ones in grace
	// Checks are the node's own check (SSH) and its services', in the
	// order of Protocols; see Check.
	Checks  [nProtos]CheckStatus
	Changed time.Time // last state change
	// IdleSince is when the node's last session ended (or when it joined
	// the pool, if it never had one); zero while it has sessions.
	IdleSince time.Time
	// Load is the node's last measured load (NaN fields: not measured);
	// LoadStale is set when it is too old to be used for placement.
	Load      Load
	LoadStale bool
}

// Check is the node's check for p (SSH: the node's own).
func (s NodeStatus) Check(p Protocol) CheckStatus { return s.Checks[p.index()] }

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
			Node:      n.Node,
			State:     n.state(),
			Sessions:  n.sessions,
			Users:     users,
			Pinned:    pinned[n],
			Changed:   n.changed,
			IdleSince: idle,
			Load:      n.load,
			LoadStale: n.load.Measured() && b.stale(n.load, now),
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
