package admin

import "time"

// The admin API's wire contract: what each endpoint answers, shared by the
// handlers and by the clients (the poolgate CLI, tests). Fields are only
// ever added.

// NodesJSON is the answer of GET /api/nodes.
type NodesJSON struct {
	Discovery DiscoveryJSON `json:"discovery"`
	Nodes     []NodeJSON    `json:"nodes"`
	State     StateJSON     `json:"state"`
}

// NodeJSON is one node in GET /api/nodes.
type NodeJSON struct {
	Name     string       `json:"name"`
	SSH      string       `json:"ssh"`
	HTTP     string       `json:"http"`
	Weight   float64      `json:"weight"`
	State    string       `json:"state"`
	Sessions SessionCount `json:"sessions"`
	Users    []string     `json:"users"`
	Pinned   int          `json:"pinned"`
	Health   string       `json:"health"`
	Changed  time.Time    `json:"changed"`
	// HTTPState is the JupyterHub check, "up", "down" or "unchecked";
	// absent for a node without a hub address.
	HTTPState  string `json:"http_state,omitempty"`
	HTTPHealth string `json:"http_health,omitempty"`
	// IdleSince is when the node's last session ended; absent while it
	// has sessions.
	IdleSince *time.Time `json:"idle_since,omitempty"`
	// Protected: its instance carries scale-in protection (Azure).
	Protected bool `json:"protected,omitempty"`
	// RDP is the node's RDP address, RDPState and RDPHealth its check
	// ("up", "down" or "unchecked"); absent for a node without RDP.
	RDP       string `json:"rdp,omitempty"`
	RDPState  string `json:"rdp_state,omitempty"`
	RDPHealth string `json:"rdp_health,omitempty"`
	// Load is the node's measured load.
	Load LoadJSON `json:"load"`
}

// LoadJSON is a node's measured load, from its exporters. A figure that
// is not measured is null. CPU is the run queue per CPU (load1 ÷ CPUs), so
// it can exceed 1; the others are fractions in use. Stale: the figures
// are older than three scrape intervals and not used for placement.
// Error is why this gateway's last scrape of the node's exporters failed
// (each failing exporter's name and error, e.g. a redirect it did not
// follow; at most about 512 bytes, printable); absent once one succeeds.
type LoadJSON struct {
	CPU       *float64   `json:"cpu"`
	Memory    *float64   `json:"memory"`
	GPU       *float64   `json:"gpu"`
	GPUMemory *float64   `json:"gpu_memory"`
	Updated   *time.Time `json:"updated"`
	Stale     bool       `json:"stale"`
	Error     string     `json:"error,omitempty"`
}

// LoadHistoryJSON is the answer of GET /api/load: each node's recent load
// samples, oldest first (one per scrape, kept since the gateway started,
// at most 240).
type LoadHistoryJSON struct {
	Nodes map[string][]LoadSampleJSON `json:"nodes"`
}

// LoadSampleJSON is one sample of a node's load.
type LoadSampleJSON struct {
	At        time.Time `json:"at"`
	CPU       *float64  `json:"cpu"`
	Memory    *float64  `json:"memory"`
	GPU       *float64  `json:"gpu"`
	GPUMemory *float64  `json:"gpu_memory"`
}

// SessionCount counts a node's live sessions by protocol.
type SessionCount struct {
	SSH  int `json:"ssh"`
	HTTP int `json:"http"`
	RDP  int `json:"rdp"`
}

// SessionJSON is one session in GET /api/sessions.
type SessionJSON struct {
	ID       uint64    `json:"id"`
	User     string    `json:"user"`
	Node     string    `json:"node"`
	Protocol string    `json:"protocol"`
	Client   string    `json:"client"`
	Started  time.Time `json:"started"`
	// Replica is the gateway holding the session, with shared state.
	Replica string `json:"replica,omitempty"`
}

// SessionsJSON is the answer of GET /api/sessions.
type SessionsJSON struct {
	Sessions []SessionJSON `json:"sessions"`
}

// DrainJSON is the answer of POST /api/nodes/{name}/drain and
// /api/nodes/{name}/undrain: the node's state after the change.
type DrainJSON struct {
	Node     string       `json:"node"`
	Sessions SessionCount `json:"sessions"`
	State    string       `json:"state"`
}

// ScaleInJSON is the answer of POST /api/scale-in: what a scale-in
// deleted (or, with DryRun, would delete) and what it kept, and why.
type ScaleInJSON struct {
	DryRun  bool              `json:"dry_run"`
	Deleted []ScaleInNodeJSON `json:"deleted"`
	Kept    []ScaleInNodeJSON `json:"kept"`
}

// ScaleInNodeJSON is one instance in a ScaleInJSON.
type ScaleInNodeJSON struct {
	Node       string `json:"node"`
	InstanceID string `json:"instance_id"`
	Idle       string `json:"idle,omitempty"`   // deleted: how long it had no session
	Reason     string `json:"reason,omitempty"` // kept: why
}

// ErrorJSON is the answer of any endpoint that fails.
type ErrorJSON struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
}

// DiscoveryJSON is the state of node discovery in GET /api/nodes.
type DiscoveryJSON struct {
	Source string `json:"source"` // "static" or "azure"
	// Stale: the last listing failed, and the nodes are those of the last
	// good one, AgeSeconds old.
	Stale       bool       `json:"stale"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	AgeSeconds  int        `json:"age_seconds"`
	Error       string     `json:"error,omitempty"`
	Instances   int        `json:"instances"` // in the last good listing
	Live        int        `json:"live"`      // of those, running and provisioned
	Starting    bool       `json:"starting"`  // scale from zero waits for a node
	// Protected names the nodes whose instances carry scale-in protection.
	Protected []string `json:"protected,omitempty"`
	// Capacity is the capacity controller's state (section capacity);
	// absent when it is off.
	Capacity *CapacityJSON `json:"capacity,omitempty"`
}

// CapacityJSON is the capacity controller's state, in GET /api/nodes.
type CapacityJSON struct {
	// Leading: this gateway acts on the scale set (with several gateways,
	// one does).
	Leading bool `json:"leading"`
	// WarmSpares is the spares wanted; Spares those running with no user
	// (instances starting count); Starting the instances asked for and
	// not yet nodes.
	WarmSpares int `json:"warm_spares"`
	Spares     int `json:"spares"`
	Starting   int `json:"starting"`
	// LastAction says what was last done and why, at LastActionAt.
	LastAction   string     `json:"last_action,omitempty"`
	LastActionAt *time.Time `json:"last_action_at,omitempty"`
	Error        string     `json:"error,omitempty"`
}

// StateJSON says where the routing state lives, in GET /api/nodes.
type StateJSON struct {
	Backend string `json:"backend"` // "memory" or "redis"
	// Degraded: Redis does not answer, and this gateway routes from its
	// own view; the counts are its own sessions only.
	Degraded bool   `json:"degraded"`
	Replica  string `json:"replica,omitempty"` // this gateway's name
}
