package balancer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Errors that callers branch on.
var (
	// ErrNoNode means no node is up, not draining and not full.
	ErrNoNode = errors.New("no node in the pool can take the session")
	// ErrUnknownNode means a node name is not in the current node set.
	ErrUnknownNode = errors.New("unknown node")
)

// Protocol is the kind of a relayed session.
type Protocol string

// Protocols the front ends relay.
const (
	SSH  Protocol = "ssh"
	HTTP Protocol = "http"
	RDP  Protocol = "rdp"
)

// nProtos is the number of protocols; protoIndex maps each to 0..nProtos-1.
const nProtos = 3

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

// Config holds the balancer's settings (YAML section "balancer").
type Config struct {
	// AffinityGrace is how long a user stays pinned to a node after their
	// last session there closes. Default 30m.
	AffinityGrace time.Duration `yaml:"affinity_grace"`
	// MaxSessionsPerNode caps the sessions a node takes from new users;
	// users already pinned to it may still open sessions there, so a user
	// is never split across nodes. 0 means no limit.
	MaxSessionsPerNode int `yaml:"max_sessions_per_node"`
	// Load places users by the nodes' measured load (section "load",
	// filled by the caller). Its zero SessionCost means the default.
	Load LoadConfig `yaml:"-"`
}

// DefaultAffinityGrace is the grace period used when Config leaves it zero.
const DefaultAffinityGrace = 30 * time.Minute

// Validate reports the first bad setting, naming its key.
func (c Config) Validate() error {
	if c.AffinityGrace < 0 {
		return fmt.Errorf("affinity_grace: must not be negative, got %s", c.AffinityGrace)
	}
	if c.MaxSessionsPerNode < 0 {
		return fmt.Errorf("max_sessions_per_node: must be 0 (no limit) or more, got %d", c.MaxSessionsPerNode)
	}
	if c.Load.Max < 0 || math.IsNaN(c.Load.Max) {
		return fmt.Errorf("load.max: must be 0 (off) or more, got %v", c.Load.Max)
	}
	if c.Load.SessionCost < 0 || math.IsNaN(c.Load.SessionCost) {
		return fmt.Errorf("load.session_cost: must be 0 (the default) or more, got %v", c.Load.SessionCost)
	}
	return nil
}

// Options carries the balancer's collaborators. The zero value is usable.
type Options struct {
	Logger *zap.Logger      // nil means no logging
	Now    func() time.Time // nil means time.Now
	// Rand returns a uniform integer in [0, n); it must be safe for
	// concurrent use. Nil means math/rand/v2.IntN.
	Rand func(n int) int
	// Shared, if set, is routing state shared with other gateways; run
	// RunShared beside the balancer. Nil means this gateway is alone.
	Shared Shared
}

// Balancer decides where sessions go and keeps count of them. It is safe
// for concurrent use. Create it with New.
type Balancer struct {
	cfg  Config
	log  *zap.Logger
	now  func() time.Time
	rand func(n int) int

	// mu protects every field below and the mutable fields of each node,
	// userState and Lease.
	mu    sync.RWMutex
	nodes map[string]*node
	order []*node // nodes in the order discovery listed them
	// loads[p][i] is order[i]'s placement score for a new session of
	// protocol index p (see scoreLocked), +Inf if it takes no new user of
	// that protocol.
	loads     [nProtos][]float64
	users     map[string]*userState
	leases    map[uint64]*Lease
	nextID    uint64
	lastSweep time.Time

	started, ended [nProtos]atomic.Uint64 // leases taken and ended, by protocol index

	// sh is the shared-state mode (Options.Shared); nil when this gateway
	// is alone. Lock order: Balancer.mu is never held while sh.view's lock
	// is taken, nor the other way round (see viewCache).
	sh *sharedMode
}

// node is the balancer's record of one pool member.
type node struct {
	Node
	weight   float64
	idx      int         // position in Balancer.order and Balancer.loads
	up       bool        // the SSH check passes (the node's state)
	checked  bool        // the SSH check reported at least once
	reason   string      // last SSH health detail
	http     protoHealth // the JupyterHub check
	rdp      protoHealth // the RDP check
	draining bool
	removed  bool
	changed  time.Time             // last change of State
	idle     time.Time             // when the node last had no session (set while it has none)
	sessions [nProtos]int          // live leases by protocol index
	users    map[string]int        // user → live leases on this node
	pinned   map[string]*userState // users whose pin points here
	load     Load                  // last measured load; NoLoad until the first
	history  *loadRing             // recent samples for ops; nil until the first
}

// protoHealth is the check of one of the node's other services (its
// JupyterHub, its RDP server). A node whose hub (RDP server) is down takes
// no browser (RDP) sessions, but keeps its SSH users and pins.
type protoHealth struct {
	up      bool
	checked bool
	reason  string
}

// upFor reports whether n may take a session of protocol index p.
func (n *node) upFor(p int) bool {
	switch p {
	case 1:
		return n.up && n.http.up && n.HTTP != ""
	case 2:
		return n.up && n.rdp.up && n.RDP != ""
	}
	return n.up
}

// userState is one user's affinity.
type userState struct {
	name      string
	node      *node     // current pin; nil if none
	live      int       // live leases, on any node
	idleSince time.Time // when live last dropped to 0
	lost      string    // node whose pin was lost (went down or left), reported once
	by        PinOrigin // who chose node
}

// PinOrigin says who chose a user's node.
type PinOrigin string

// Who can choose a user's node.
const (
	ByBalancer PinOrigin = "balancer" // placed by the routing rules
	ByUser     PinOrigin = "user"     // named at login (ssh alice+node-3@pool)
	ByOps      PinOrigin = "ops"      // pinned through the admin API
)

func protoIndex(p Protocol) int {
	switch p {
	case HTTP:
		return 1
	case RDP:
		return 2
	}
	return 0
}

// total is the node's live sessions of every protocol.
func (n *node) total() int {
	t := 0
	for _, k := range n.sessions {
		t += k
	}
	return t
}

// New returns a balancer with an empty node set.
func New(cfg Config, opts Options) *Balancer {
	if cfg.AffinityGrace == 0 {
		cfg.AffinityGrace = DefaultAffinityGrace
	}
	if cfg.Load.SessionCost == 0 {
		cfg.Load.SessionCost = DefaultSessionCost
	}
	b := &Balancer{
		cfg:    cfg,
		log:    opts.Logger,
		now:    opts.Now,
		rand:   opts.Rand,
		nodes:  make(map[string]*node),
		users:  make(map[string]*userState),
		leases: make(map[uint64]*Lease),
	}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.rand == nil {
		b.rand = rand.IntN
	}
	b.lastSweep = b.now()
	if opts.Shared != nil {
		b.sh = newSharedMode(opts.Shared)
	}
	return b
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
			n = &node{changed: now, idle: now, users: make(map[string]int), pinned: make(map[string]*userState), load: NoLoad}
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
			b.unpinAllLocked(n)
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

// SetHealth records a health-check result for the named node. Unknown
// names are ignored (the node may have just left the pool). A node that
// goes down loses its pins (rule 5).
func (b *Balancer) SetHealth(name string, up bool, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return
	}
	n.reason = reason
	if n.checked && n.up == up {
		return
	}
	n.checked = true
	n.up = up
	n.changed = b.now()
	if !up {
		b.unpinAllLocked(n)
	}
	b.refreshLocked(n)
}

// SetHTTPHealth records a result of the node's HTTP (JupyterHub) check.
// A node whose hub is down takes no new browser sessions and a browser
// user pinned there is moved on their next request; its SSH users and
// their pins are left alone, since sshd still works.
func (b *Balancer) SetHTTPHealth(name string, up bool, reason string) {
	b.setProtoHealth(name, func(n *node) *protoHealth { return &n.http }, up, reason)
}

// SetRDPHealth records a result of the node's RDP check: a node whose RDP
// server is down takes no new RDP sessions (an RDP user pinned there is
// moved on their next connection) but keeps its SSH and browser users.
func (b *Balancer) SetRDPHealth(name string, up bool, reason string) {
	b.setProtoHealth(name, func(n *node) *protoHealth { return &n.rdp }, up, reason)
}

func (b *Balancer) setProtoHealth(name string, which func(*node) *protoHealth, up bool, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return
	}
	h := which(n)
	h.reason = reason
	if h.checked && h.up == up {
		return
	}
	h.checked, h.up = true, up
	n.changed = b.now()
	b.refreshLocked(n)
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
	if n.draining != on {
		n.draining = on
		n.changed = b.now()
		b.refreshLocked(n)
		b.log.Info("node drain changed", zap.String("node", name), zap.Bool("draining", on))
	}
	return nil
}

// unpinAllLocked drops every pin to n, remembering the loss for the users'
// next lease.
func (b *Balancer) unpinAllLocked(n *node) {
	for name, u := range n.pinned {
		u.node = nil
		u.lost = n.Name
		delete(n.pinned, name)
	}
}

func (n *node) state() State {
	switch {
	case !n.up:
		return StateDown
	case n.draining:
		return StateDraining
	default:
		return StateUp
	}
}

// NodeStatus is a snapshot of one node for ops.
type NodeStatus struct {
	Node
	State        State
	SSHSessions  int
	HTTPSessions int
	RDPSessions  int
	Users        []string  // users with a live session on the node, sorted
	Pinned       int       // users pinned to the node, including idle ones in grace
	Checked      bool      // at least one health check has reported
	HealthDetail string    // last health-check detail
	Changed      time.Time // last state change
	// IdleSince is when the node's last session ended (or when it joined
	// the pool, if it never had one); zero while it has sessions.
	IdleSince time.Time
	// HTTP is the node's JupyterHub check: HTTPChecked once it reported.
	HTTPUp, HTTPChecked bool
	HTTPDetail          string
	// RDP is the node's RDP check: RDPChecked once it reported.
	RDPUp, RDPChecked bool
	RDPDetail         string
	// Load is the node's last measured load (NaN fields: not measured);
	// LoadStale is set when it is too old to be used for placement.
	Load      Load
	LoadStale bool
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
	out := make([]NodeStatus, 0, len(b.order))
	now := b.now()
	for _, n := range b.order {
		pinned := 0
		for _, u := range n.pinned {
			if b.pinValidLocked(u, now, 0) {
				pinned++
			}
		}
		users := make([]string, 0, len(n.users))
		for u := range n.users {
			users = append(users, u)
		}
		sort.Strings(users)
		var idle time.Time
		if n.total() == 0 {
			idle = n.idle
		}
		out = append(out, NodeStatus{
			Node:         n.Node,
			State:        n.state(),
			SSHSessions:  n.sessions[0],
			HTTPSessions: n.sessions[1],
			RDPSessions:  n.sessions[2],
			Users:        users,
			Pinned:       pinned,
			Checked:      n.checked,
			HealthDetail: n.reason,
			Changed:      n.changed,
			IdleSince:    idle,
			HTTPUp:       n.http.up,
			HTTPChecked:  n.http.checked,
			HTTPDetail:   n.http.reason,
			RDPUp:        n.rdp.up,
			RDPChecked:   n.rdp.checked,
			RDPDetail:    n.rdp.reason,
			Load:         n.load,
			LoadStale:    n.load.Measured() && b.stale(n.load, now),
		})
	}
	return out
}

// Started counts the sessions of proto ever started; Ended those ended.
func (b *Balancer) Started(proto Protocol) uint64 { return b.started[protoIndex(proto)].Load() }

// Ended counts the sessions of proto that ended (released or aborted).
func (b *Balancer) Ended(proto Protocol) uint64 { return b.ended[protoIndex(proto)].Load() }

// SessionInfo is a snapshot of one live session.
type SessionInfo struct {
	ID       uint64
	User     string
	Node     string
	Protocol Protocol
	Client   string
	Started  time.Time
	// Replica is the gateway that holds the session, with shared state.
	Replica string
}

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
