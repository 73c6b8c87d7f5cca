package balancer

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// This file is the routing rules, once: pure functions over what a store
// read (a user's pin and the nodes as this gateway sees them), returning a
// verdict. The local store applies verdicts under its lock; the shared
// store (Redis) reads a snapshot, decides with these same functions and
// applies the verdict by compare-and-set, deciding again on a conflict.
// Neither store holds a rule of its own.

// Errors that callers branch on.
var (
	// ErrNoNode means no node is up, not draining and not full.
	ErrNoNode = errors.New("no node in the pool can take the session")
	// ErrUnknownNode means a node name is not in the current node set.
	ErrUnknownNode = errors.New("unknown node")
	// ErrNodeDown means the node is in the pool but cannot take a session
	// of the protocol now (its check fails).
	ErrNodeDown = errors.New("node is down")
	// ErrDraining means the node takes no new users and the user is not
	// already on it.
	ErrDraining = errors.New("node is draining")
	// ErrNodeFull means the node has max_sessions_per_node sessions and
	// the user is not already on it.
	ErrNodeFull = errors.New("node is full")
)

// PinOrigin says who chose a user's node.
type PinOrigin string

// Who can choose a user's node.
const (
	ByBalancer PinOrigin = "balancer" // placed by the routing rules
	ByUser     PinOrigin = "user"     // named at login (ssh alice+node-3@pool)
	ByOps      PinOrigin = "ops"      // pinned through the admin API
)

// Pin is a user's affinity: the node their sessions go to.
type Pin struct {
	Node string    // "" when the user has none
	By   PinOrigin // who chose Node
	// Lost names the node the user was moved off because it was gone,
	// until an SSH session has told them (a banner line).
	Lost string
	// Until is when the pin ends if no session is open: the end of the
	// grace after the user's last session. While sessions are open it is
	// kept at least a grace ahead of them (shared) or ignored (local).
	Until time.Time
}

// userPin is a pin with the user's live sessions (pool-wide where the
// store knows them): what rule 2 reads.
type userPin struct {
	Pin
	live int
}

// valid reports whether the pin still holds at now (rule 2): the user has
// a session open, or the grace after their last one has not passed.
func (u userPin) valid(now time.Time) bool {
	return u.Node != "" && (u.live > 0 || now.Before(u.Until))
}

// nodeFacts is one node as a decision sees it, for one protocol.
type nodeFacts struct {
	// up: its checks pass for the protocol (the node's own check and the
	// protocol's service), and it has an address for it.
	up bool
	// alive: it is not gone for the protocol (see gone), so pins to it
	// hold even while its checks fail.
	alive    bool
	draining bool
	full     bool // at max_sessions_per_node
}

// facts is what a decision reads besides the user's pin: the pool as this
// gateway sees it for one protocol, with session counts from the store.
type facts interface {
	// lookup returns the named node's facts; ok is false when it is
	// not in the pool.
	lookup(name string) (f nodeFacts, ok bool)
	// leastLoaded names the node a new user goes to (rule 3): the lowest
	// score among the nodes up, not draining, not full and not avoided,
	// ties broken at random; "" when there is none. With anyAlive, nodes
	// whose checks fail but that are not gone count as up.
	leastLoaded(avoid []string, anyAlive bool) string
}

// query is one request for a session.
type query struct {
	proto Protocol
	avoid []string  // nodes the front end could not use
	named string    // the node the session must go to ("" for the rules' choice)
	by    PinOrigin // who named it
	now   time.Time
}

// verdict is where the session goes.
type verdict struct {
	node    string
	created bool   // the pin is new or moved
	lost    string // node the user was moved off, to be told (Lease.Repinned)
	by      PinOrigin
}

// decide applies the routing rules to a request for the user whose pin is
// u. It returns ErrNoNode when no node can take the session, and for a
// named node ErrUnknownNode, ErrNodeDown, ErrDraining or ErrNodeFull.
func decide(f facts, u userPin, q query) (verdict, error) {
	if q.named != "" {
		return decideNamed(f, u, q)
	}
	lost := u.Lost
	if u.valid(q.now) {
		// Rule 2: the user goes to their node while it is alive, even if
		// its checks fail for now (rule 5: one slow probe moves nobody),
		// draining (rule 4) or full. A node gone, or one the front end
		// could not use, moves them, and they are told.
		nf, ok := f.lookup(u.Node)
		if ok && nf.alive && !slices.Contains(q.avoid, u.Node) {
			return verdict{node: u.Node, lost: lost, by: u.By}, nil
		}
		if lost == "" {
			lost = u.Node
		}
	}
	name := f.leastLoaded(q.avoid, false)
	if name == "" {
		// Every node's check fails at once, yet some are not gone: the
		// checks are more likely slow (a busy pool) than every node
		// dead, so the user goes to one of those (as Envoy's panic
		// threshold does); a dial that fails there makes it gone.
		name = f.leastLoaded(q.avoid, true)
	}
	if name == "" {
		return verdict{}, ErrNoNode
	}
	if name == u.Node && u.valid(q.now) {
		return verdict{node: name, lost: lost, by: u.By}, nil
	}
	return verdict{node: name, created: true, lost: lost, by: ByBalancer}, nil
}

// decideNamed is rule 3a: the session goes to the node the user named (or
// a front end chose before the user was proven), moving the pin there. A
// node the user is already on takes them whatever its drain or fill, and
// even while its checks fail, as long as it is alive.
func decideNamed(f facts, u userPin, q query) (verdict, error) {
	nf, ok := f.lookup(q.named)
	if !ok {
		return verdict{}, fmt.Errorf("%w %q", ErrUnknownNode, q.named)
	}
	onIt := u.valid(q.now) && u.Node == q.named && nf.alive
	switch {
	case !onIt && !nf.up:
		return verdict{}, fmt.Errorf("%w: %s", ErrNodeDown, q.named)
	case !onIt && nf.draining:
		return verdict{}, fmt.Errorf("%w: %s", ErrDraining, q.named)
	case !onIt && nf.full:
		return verdict{}, fmt.Errorf("%w: %s", ErrNodeFull, q.named)
	}
	by := u.By
	if !onIt || q.by != ByBalancer {
		by = q.by // naming the node one is on makes the choice one's own
	}
	if by == "" {
		by = ByBalancer
	}
	return verdict{node: q.named, created: !onIt, lost: u.Lost, by: by}, nil
}

// pinAfterGrant is the user's pin once a session of proto was granted by
// v: on v's node, and the lost node forgotten once an SSH session tells
// the user (only the SSH front end can: a banner line). keep is how long
// the pin must last at least (the shared store's lease expiry plus the
// grace; zero locally, where open sessions hold the pin).
func pinAfterGrant(old Pin, v verdict, proto Protocol, keep time.Time) Pin {
	p := Pin{Node: v.node, By: v.by, Lost: v.lost, Until: keep}
	if p.By == "" {
		p.By = ByBalancer
	}
	if proto == SSH {
		p.Lost = ""
	}
	if !v.created && old.Node == v.node && old.Until.After(p.Until) {
		p.Until = old.Until
	}
	return p
}

// pinAfterRelease is the user's pin once a session on node ended and
// liveAfter sessions of the user remain: the user's last session starts
// the grace; a session that never started (abort) and whose grant created
// the pin takes the pin away again, keeping the node the user lost
// (lostBefore) for the session that does start. ok is false when no pin
// remains at all.
func pinAfterRelease(old Pin, node string, liveAfter int, abortCreated bool, lostBefore string, now time.Time, grace time.Duration) (p Pin, ok bool) {
	if liveAfter > 0 {
		return old, old.Node != "" || old.Lost != ""
	}
	if abortCreated && old.Node == node {
		if lostBefore == "" {
			return Pin{}, false
		}
		return Pin{Lost: lostBefore, Until: now.Add(grace)}, true
	}
	if old.Node == "" {
		return old, old.Lost != ""
	}
	old.Until = now.Add(grace)
	return old, true
}

// pinWithSession is the pin of a user found with a live session on node
// (a heartbeat, or a lease recorded after the fact): it holds the pin
// there until keep. A pin that holds elsewhere wins (the pool agreed on
// it first); then split is set and the pin is unchanged.
func pinWithSession(old Pin, node string, now, keep time.Time) (p Pin, split bool) {
	switch {
	case old.Node == node:
		if keep.After(old.Until) {
			old.Until = keep
		}
		return old, false
	case old.Node != "" && now.Before(old.Until):
		return old, true
	}
	return Pin{Node: node, By: ByBalancer, Lost: old.Lost, Until: keep}, false
}
