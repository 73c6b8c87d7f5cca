package sshgw

import (
	"sync"
	"time"
)

// StartLimit bounds the password logins that may start a node, or wait
// for one that is starting (scale from zero). A password is proven only
// by the node that accepts it, so such a login is anyone's: keys and
// certificates are proven before any start and are not bounded here.
type StartLimit struct {
	// Window is how long a login counts against the bounds: the start
	// timeout, so that a node is started for password logins at most as
	// often as it would be for one client that keeps trying. Default 10m.
	Window time.Duration
	// PerAddress bounds the logins from one client address (IPv6 by /64)
	// within Window. Default 1.
	PerAddress int
	// Total bounds the logins from all addresses within Window. Default 3.
	Total int
}

// The documented defaults of StartLimit.
const (
	DefaultStartLimitWindow     = 10 * time.Minute
	DefaultStartLimitPerAddress = 1
	DefaultStartLimitTotal      = 3
)

func (l StartLimit) withDefaults() StartLimit {
	if l.Window <= 0 {
		l.Window = DefaultStartLimitWindow
	}
	if l.PerAddress <= 0 {
		l.PerAddress = DefaultStartLimitPerAddress
	}
	if l.Total <= 0 {
		l.Total = DefaultStartLimitTotal
	}
	return l
}

// startLimiter counts the password logins let start a node, by address.
type startLimiter struct {
	lim StartLimit
	now func() time.Time

	mu   sync.Mutex // protects used
	used []startUse // oldest first; at most lim.Total
}

type startUse struct {
	addr string // netx.AddrKey of the client
	at   time.Time
}

func newStartLimiter(l StartLimit, now func() time.Time) *startLimiter {
	return &startLimiter{lim: l.withDefaults(), now: now}
}

// take counts one login from addr, and reports false (counting nothing)
// when a bound is reached. give returns a count taken for a login that
// found no start offered.
func (s *startLimiter) take(addr string) (give func(), ok bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.used) > 0 && now.Sub(s.used[0].at) >= s.lim.Window {
		s.used = s.used[1:]
	}
	n := 0
	for _, u := range s.used {
		if u.addr == addr {
			n++
		}
	}
	if n >= s.lim.PerAddress || len(s.used) >= s.lim.Total {
		return nil, false
	}
	u := startUse{addr: addr, at: now}
	s.used = append(s.used, u)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := range s.used {
			if s.used[i] == u {
				s.used = append(s.used[:i], s.used[i+1:]...)
				return
			}
		}
	}, true
}
