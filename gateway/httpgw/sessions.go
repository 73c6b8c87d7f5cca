package httpgw

import (
	"sync"
	"time"

	"github.com/poolgate/poolgate/balancer"
)

// session is one user's HTTP activity on their node: one balancer lease,
// live while a request or stream of theirs is in flight or their last
// request is younger than the idle window.
type session struct {
	user  string
	lease *balancer.Lease
	node  balancer.Node

	// Protected by tracker.mu.
	active    int       // requests and streams in flight
	last      time.Time // end of the last request
	confirmed bool      // the hub has shown the user is logged in
	detached  bool      // replaced (its node went down); ends when idle
}

// tracker maps users to their HTTP sessions.
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

// begin returns the user's session, taking a lease when they have none or
// when their node can no longer serve browsers (the balancer then moves
// them), and counts one request or stream in flight.
func (t *tracker) begin(user, client string) (*session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byUser[user]
	if s != nil && !t.bal.Usable(s.node.Name, balancer.HTTP) {
		delete(t.byUser, user)
		s.detached = true
		if s.active == 0 {
			t.endLocked(s)
		}
		s = nil
	}
	if s == nil {
		l, err := t.bal.Acquire(user, balancer.HTTP, client)
		if err != nil {
			return nil, err
		}
		s = &session{user: user, lease: l, node: l.Node()}
		t.byUser[user] = s
	}
	s.active++
	return s, nil
}

// end counts one request or stream of s as finished. confirmed says the
// hub's answer showed the user logged in. A session no answer has ever
// confirmed ends with its last request, without leaving a pin, so that
// requests naming users who are not logged in leave no trace.
func (t *tracker) end(s *session, confirmed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.active--
	s.last = t.now()
	if confirmed {
		s.confirmed = true
	}
	if s.active > 0 {
		return
	}
	if s.detached || !s.confirmed {
		if t.byUser[s.user] == s {
			delete(t.byUser, s.user)
		}
		t.endLocked(s)
	}
}

func (t *tracker) endLocked(s *session) {
	if s.confirmed {
		s.lease.Release()
	} else {
		s.lease.Abort()
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
			t.endLocked(s)
		}
	}
}

// closeAll ends every session (shutdown).
func (t *tracker) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for user, s := range t.byUser {
		delete(t.byUser, user)
		t.endLocked(s)
	}
}
