package balancer

import (
	"context"
	"time"
)

// Shared is routing state kept with other gateways (pins, leases and drain
// flags in Redis, say), so that several gateways behind one load balancer
// route alike. The balancer stays the decision's owner of last resort:
// with Options.Shared set, Acquire claims the node there in one atomic
// step and records the lease locally too; when the shared state cannot be
// reached, it decides from its own view (degraded) and RunShared puts its
// sessions back once the shared state answers again.
type Shared interface {
	// Claim picks the node for a new session of c.User following the
	// routing rules over c.Nodes, and records the lease, atomically
	// across gateways. Claimed.Node is "" when no node can take it.
	Claim(ctx context.Context, c Claim) (Claimed, error)
	// Release ends a lease (Abort: one whose session never started).
	Release(ctx context.Context, r SharedRelease) error
	// Heartbeat refreshes this gateway's live leases, re-creating any the
	// shared state lost, and forgets the others it holds there (released,
	// or lost while degraded) as Beat says.
	Heartbeat(ctx context.Context, b Beat) error
	// Record puts one lease of this gateway in the shared state, on the
	// node given (a pinned user served from the local pin cache).
	Record(ctx context.Context, l LeaseRecord) error
	// SetPin moves (or, with Node "", drops) a user's pin as ops ask, and
	// tells the other gateways.
	SetPin(ctx context.Context, c PinChange) error
	// Pins lists the users pinned at now, with who chose each node.
	Pins(ctx context.Context, now time.Time) ([]PinInfo, error)
	// PinOf returns the node the user is pinned to at now, "" if none.
	PinOf(ctx context.Context, user string, now time.Time) (string, error)
	// Drain sets or clears the node's drain flag for every gateway.
	Drain(ctx context.Context, node string, on bool) error
	// View returns the whole pool's sessions and drain flags.
	View(ctx context.Context) (View, error)
	// Replica names this gateway among those sharing the state.
	Replica() string
	// HeartbeatInterval is how often RunShared refreshes this gateway's
	// leases there.
	HeartbeatInterval() time.Duration
	// Watch passes the shared state's pin notices to n until ctx ends:
	// n.SetPinNotices(true) each time notices are known to arrive and
	// false when they may be missed, n.ForgetPin(user) for each user whose
	// pin another gateway created or moved. RunShared runs it.
	Watch(ctx context.Context, n PinNotices)
}

// PinNotices receives the shared state's pin notices (Shared.Watch); the
// Balancer implements it.
type PinNotices interface {
	ForgetPin(user string)
	SetPinNotices(live bool)
}

// Claim is one Acquire's question to the shared state.
type Claim struct {
	User    string
	Proto   Protocol
	Client  string
	LeaseID uint64 // this gateway's lease ID
	// Nodes are this gateway's nodes with its health view: Up for the
	// protocol, Avoid when the front end could not reach it.
	Nodes              []Candidate
	Now                time.Time
	Grace              time.Duration
	MaxSessionsPerNode int
	// SessionCost is what one session per weight adds to a node's score
	// (LoadConfig.SessionCost); the score is Candidate.Load plus that.
	SessionCost float64
	// Rand in [0, 1) breaks ties among the least-loaded nodes.
	Rand float64
	// Node, if set, is the node the session must go to (AcquireOn): the
	// shared state takes it there, moving the user's pin, unless it is
	// draining or full and the user is not pinned to it (Claimed.Refused).
	Node string
	// By is who chose Node (ByUser, or ByBalancer for a peeked node); a
	// pin the shared state chooses itself is ByBalancer.
	By PinOrigin
}

// Candidate is a node as one gateway sees it.
type Candidate struct {
	Name   string
	Weight float64
	Up     bool
	Avoid  bool
	// Load is the measured part of the node's placement score, from this
	// gateway's own scrapes (every gateway scrapes for itself): its peak
	// resource use, more than 1e9 when at or above load.max, 0 without
	// figures.
	Load float64
}

// Claimed is the shared state's answer to a Claim.
type Claimed struct {
	Node    string // "" when no node can take the session
	Lost    string // node the user's pin was moved from, reported once
	Created bool   // the claim created or moved the pin
	// Refused says why a claim naming a node got none: "draining" or
	// "full".
	Refused string
	// By is who chose the user's pin as it stands.
	By PinOrigin
}

// SharedRelease ends one lease in the shared state.
type SharedRelease struct {
	LeaseID uint64
	User    string
	Node    string
	// Abort: the session never started and its claim created the pin,
	// which goes (Lost, if set, is kept for the user's next session).
	Abort bool
	Lost  string
}

// Beat is one heartbeat: this gateway's live leases when it was taken.
// The shared state forgets the gateway's other leases, except claims that
// were under way (Pending) or began after it (IDs above UpTo).
type Beat struct {
	Leases  []LeaseRecord
	Pending []uint64
	UpTo    uint64
}

// LeaseRecord is one of this gateway's live leases, for Heartbeat.
type LeaseRecord struct {
	ID      uint64
	User    string
	Node    string
	Proto   Protocol
	Client  string
	Started time.Time
}

// View is the whole pool as the shared state holds it.
type View struct {
	Nodes    map[string]NodeView
	Sessions []SessionInfo // every gateway's, with Replica set
}

// NodeView is one node's share of a View.
type NodeView struct {
	Sessions  [nProtos]int // by protocol: SSH, HTTP, RDP
	Users     []string
	Pinned    int
	Draining  bool
	IdleSince time.Time // when its last session ended; zero while it has some
}

// Timeouts of shared-state calls: a login waits at most claimTimeout
// before the balancer decides alone.
const (
	claimTimeout = 300 * time.Millisecond
	syncTimeout  = 2 * time.Second
	viewTTL      = 500 * time.Millisecond
	// degradedRetry is how often a degraded balancer tries the shared
	// state again.
	degradedRetry = time.Second
	// pinCacheTTL bounds how long a pin learnt from the shared state
	// serves a pinned user's picks locally; the shared state's pin
	// notices (ForgetPin) end it sooner. The cache serves only while the
	// notices are known to arrive (SetPinNotices).
	pinCacheTTL = 5 * time.Second
	// everyLease is an UpTo above any lease ID a gateway makes (and exact
	// in Lua's numbers, below 2^53): an empty Beat with it forgets all of
	// the gateway's leases.
	everyLease = 1 << 52
)
