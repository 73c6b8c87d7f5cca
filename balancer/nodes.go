package balancer

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

// Protocol is the kind of a relayed session.
type Protocol string

// Protocols the front ends relay.
const (
	SSH  Protocol = "ssh"
	HTTP Protocol = "http"
	RDP  Protocol = "rdp"
)

// protocols is the table of protocols: a protocol's position in it indexes
// every per-protocol table (health, counts, scores), and addr reads the
// node's address for it. Adding a protocol is a field of Node, one
// entry here and its front end; SSH comes first, since its check is the node's own state.
var protocols = [...]struct {
	p    Protocol
	addr func(Node) string
}{
	{SSH, func(n Node) string { return n.SSH }},
	{HTTP, func(n Node) string { return n.HTTP }},
	{RDP, func(n Node) string { return n.RDP }},
}

// own is the index of the node's own check: SSH's, first in the table. A
// node whose own check fails takes no new session of any protocol.
const own = 0

// nProtos is the number of protocols.
const nProtos = len(protocols)

// Protocols lists every protocol, in the order of PerProtocol's entries.
func Protocols() []Protocol {
	out := make([]Protocol, nProtos)
	for i, e := range protocols {
		out[i] = e.p
	}
	return out
}

// index is p's position in the table; an unknown protocol counts as SSH.
func (p Protocol) index() int {
	for i, e := range protocols {
		if e.p == p {
			return i
		}
	}
	return 0
}

// Addr is the node's host:port for p, "" when the node does not serve it.
func (p Protocol) Addr(n Node) string { return protocols[p.index()].addr(n) }

// PerProtocol holds one count per protocol, in the order of Protocols.
type PerProtocol [nProtos]int

// Of is p's count.
func (c PerProtocol) Of(p Protocol) int { return c[p.index()] }

// Total is the sum over every protocol.
func (c PerProtocol) Total() int {
	t := 0
	for _, k := range c {
		t += k
	}
	return t
}
