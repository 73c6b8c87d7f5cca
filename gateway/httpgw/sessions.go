package httpgw

import (
	"sync"
	"time"

	"github.com/poolgate/poolgate/balancer"
)

// session is one proven user's HTTP activity on their node: one balancer
// lease, live while a proven request or stream of theirs is in flight or
// their last proven request is younger than the idle window.
type session struct {
	user  string
	lease *balancer.Lease
	node  balancer.Node

	// Protected by tracker.mu.
	active   int       // proven requests and streams in flight
	last     time.Time // end of the last proven request
	detached bool      // replaced (its node went down); ends when idle
}

// tracker maps proven users to their HTTP sessions. Only answers that
// prove the user (see proof.go) reach it: a request that merely names a
// user is routed by nodeOf and the balancer's Pinned, and takes nothing.
type tracker struct {
	bal  Balancer
	idle time.Duration
	now  func() time.Time

	mu     sync.Mutex
	byUser map[string]*session
}

func newTracker(bal Balancer, idle time.Duration, now func() time.Time) *tracker {
	return &tracker{bal: bal, idle: idle, now: now, byUser: map[string]*session{}}
}

// nodeOf returns the node of the user's live session, when there is one
// and its node can still serve browsers. It takes nothing.
func (t *tracker) nodeOf(user string) (balancer.Node, bool) {
	t.mu.Lock()
	s := t.byUser[user]
	t.mu.Unlock()
	if s == nil || !t.bal.Usable(s.node.Name, balancer.HTTP) {
		return balancer.Node{}, false
	}
	return s.node, true
}

// confirm counts one proven request or stream of user, answered by node:
// it returns the user's session, taking a lease on node when they have
// none there (a session on another node, say one that went down, is
// replaced), and counts one in flight. The caller
// ends it with end.
func (t *tracker) confirm(user string, node balancer.Node, client string) (*session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byUser[user]
	// node was checked usable when the request was routed to it, so a
	// session there needs no second look.
	if s != nil && s.node.Name != node.Name {
		delete(t.byUser, user)
		s.detached = true
		if s.active == 0 {
			s.lease.Release()
		}
		s = nil
	}
	if s == nil {
		// The hub on node vouched for the user: the lease goes there, so
		// every other node is avoided (a user already pinned elsewhere
		// is moved, as after a failed connection).
		var avoid []string
		for _, name := range t.bal.NodeNames() {
			if name != node.Name {
				avoid = append(avoid, name)
			}
		}
		l, err := t.bal.Acquire(user, balancer.HTTP, client, avoid...)
		if err != nil && len(avoid) > 0 {
			// node itself takes no new session (full, draining): count
			// the user wherever the rules put them.
			l, err = t.bal.Acquire(user, balancer.HTTP, client)
		}
		if err != nil {
			return nil, err
		}
		s = &session{user: user, lease: l, node: l.Node()}
		t.byUser[user] = s
	}
	s.active++
	return s, nil
}

// end counts one proven request or stream of s as finished.
func (t *tracker) end(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.active--
	s.last = t.now()
	if s.active > 0 {
		return
	}
	if s.detached {
		s.lease.Release()
	}
}

// sweep ends sessions idle for the idle window.
func (t *tracker) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for user, s := range t.byUser {
		if s.active == 0 && now.Sub(s.last) >= t.idle {
			delete(t.byUser, user)
			s.lease.Release()
		}
	}
}

// closeAll ends every session (shutdown).
func (t *tracker) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for user, s := range t.byUser {
		delete(t.byUser, user)
		s.lease.Release()
	}
}
