package balancer

import "time"

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

// upFor reports whether n takes new sessions of protocol index p: its own
// check and p's pass, and it has an address for p.
func (n *node) upFor(p int) bool {
	c, own := &n.checks[p], &n.checks[own]
	return own.up && !own.failed && c.up && !c.failed && n.serves(p)
}

// serves reports whether n has an address for protocol index p. Every
// node serves SSH: its check is the node's own.
func (n *node) serves(p int) bool { return p == own || protocols[p].addr(n.Node) != "" }

func (n *node) state() State {
	switch {
	case !n.checks[own].up:
		return StateDown
	case n.draining:
		return StateDraining
	default:
		return StateUp
	}
}
