// Snapshots handed to ops: sessions, nodes with their checks, pins.

package balancer

import "time"

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
	// LoadError is why the last scrape of the node's exporters failed
	// (bounded, printable), seen at LoadErrorAt; "" once one succeeds.
	// With shared state it is this gateway's own scrape.
	LoadError   string
	LoadErrorAt time.Time
}

// Check is the node's check for p (SSH: the node's own).
func (s NodeStatus) Check(p Protocol) CheckStatus { return s.Checks[p.index()] }

// PinInfo is one user's pin, for ops.
type PinInfo struct {
	User     string
	Node     string
	By       PinOrigin
	Sessions int // the user's live sessions, on any node (the whole pool's with shared state)
	// Until is when the pin ends unless a session opens; zero while the
	// user has sessions.
	Until time.Time
	// Elsewhere names nodes other than Node where the user still had
	// sessions when the shared state reconciled two gateways' choices
	// (made while it was unreachable): Node won, as the pool agreed on it
	// first.
	Elsewhere []string
}
