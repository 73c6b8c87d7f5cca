package balancer

import (
	"context"
	"time"
)

// Shared is routing state kept with other gateways (pins, leases and drain
// flags in Redis, say), so that several gateways behind one load balancer
// route alike. It holds no rule: every decision is the balancer's (see
// rules.go), made over a Snapshot the shared state read and applied by it
// atomically. Each gateway keeps a whole copy of the pin table, current
// through Watch's notices and a full read at each heartbeat, and routes by
// it alone while the shared state cannot be reached.
type Shared interface {
	// Update reads what r asks for, passes it to decide, and applies the
	// Change decide returns atomically: if another gateway changed the
	// shared state meanwhile, it reads and calls decide again (a
	// compare-and-set, retried): writes to the users' pins conflict,
	// and with Read.Placing other placements and drains too. An error
	// from decide is returned as it is, with nothing applied. ver is the
	// version the changed pins got; each user's versions only rise.
	Update(ctx context.Context, r Read, decide func(*Snapshot) (Change, error)) (ver uint64, err error)
	// PinTable reads every pin that holds at now, with its version.
	PinTable(ctx context.Context, now time.Time) (map[string]VersionedPin, error)
	// View returns the whole pool's sessions and drain flags.
	View(ctx context.Context) (View, error)
	// Watch passes the shared state's pin notices to n until ctx ends:
	// n.SetPinNotices(true) each time notices are known to arrive and
	// false when they may be missed, n.PinNotice for each pin written.
	// RunShared runs it.
	Watch(ctx context.Context, n PinNotices)
	// Replica names this gateway among those sharing the state.
	Replica() string
	// LeaseTTL is how long a lease outlives its last refresh; RunShared
	// refreshes this gateway's leases every third of it.
	LeaseTTL() time.Duration
}

// PinNotices receives the shared state's pin notices (Shared.Watch); the
// Balancer implements it.
type PinNotices interface {
	PinNotice(user string, p Pin, ver uint64)
	SetPinNotices(live bool)
}

// VersionedPin is a pin with the version the shared state gave it: a
// copy keeps the highest version it heard of.
type VersionedPin struct {
	Pin
	Ver uint64
}

// Read says what an Update reads.
type Read struct {
	Now   time.Time
	Users []string // their pins and live sessions
	// Without lists leases of this gateway that Live leaves out (the
	// one being released).
	Without []uint64
	Nodes   []string // their live sessions, every gateway's
	Mine    bool     // this gateway's leases as the shared state holds them
	// Placing: the decision places a session by the pool's counts and
	// drains, so it conflicts with every other placement and drain, not
	// only with writes to its users' pins.
	Placing bool
}

// Snapshot is what an Update read, as of Now.
type Snapshot struct {
	Now      time.Time
	Pins     map[string]Pin         // by user asked; the zero Pin when none
	Live     map[string]int         // by user asked: live sessions, every gateway's
	Sessions map[string]PerProtocol // by node asked: live sessions, every gateway's
	Draining map[string]bool        // every drained node
	Mine     []LeaseRecord          // with Read.Mine: this gateway's leases there
}

// Change is what an Update writes.
type Change struct {
	Pins  map[string]Pin  // set; the zero Pin deletes
	Put   []LeaseRecord   // added or refreshed, expiring a lease TTL from now
	Drop  []LeaseRecord   // removed (ID, User, Node and Proto are used)
	Idle  []string        // nodes whose last session ended now
	Drain map[string]bool // drain flags set or cleared
}

// LeaseRecord is one of this gateway's live leases, as the shared state
// holds it.
type LeaseRecord struct {
	ID      uint64
	User    string
	Node    string
	Proto   Protocol
	Client  string
	Started time.Time
}

// SharedRelease ends one lease in the shared state.
type SharedRelease struct {
	LeaseID uint64
	User    string
	Node    string
	Proto   Protocol
	// Abort: the session never started and its grant created the pin,
	// which goes (Lost, if set, is kept for the user's next session).
	Abort bool
	Lost  string
}

// View is the whole pool as the shared state holds it.
type View struct {
	Nodes    map[string]NodeView
	Sessions []SessionInfo // every gateway's, with Replica set
}

// NodeView is one node's share of a View.
type NodeView struct {
	Sessions  PerProtocol
	Users     []string
	Pinned    int
	Draining  bool
	IdleSince time.Time // when its last session ended; zero while it has some
}

// Timeouts of shared-state calls. A login waits at most claimTimeout on
// the shared state (a snapshot, a decision, a write, and again after a
// conflict with other gateways' writes); if it does not answer in time the
// gateway routes from its own copy of the pins, and later logins do not
// wait on it until a heartbeat finds it answering again.
const (
	claimTimeout = time.Second
	syncTimeout  = 2 * time.Second
	viewTTL      = 500 * time.Millisecond
	// degradedRetry is how often a degraded balancer tries the shared
	// state again.
	degradedRetry = time.Second
)
