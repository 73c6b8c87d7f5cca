package identity

import (
	"sync"
	"time"
)

// startLimiter counts device-code sign-ins started within a window, per
// client address key and in all.
type startLimiter struct {
	lim DeviceLimit
	now func() time.Time

	mu   sync.Mutex // protects used
	used []startUse // oldest first
}

type startUse struct {
	addr string // netx.AddrKey of the client
	at   time.Time
}

func newStartLimiter(l DeviceLimit, now func() time.Time) *startLimiter {
	return &startLimiter{lim: l, now: now}
}

// take counts one start from addr, or reports false (counting nothing)
// when a bound is reached.
func (s *startLimiter) take(addr string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for i < len(s.used) && now.Sub(s.used[i].at) >= s.lim.Window {
		i++
	}
	s.used = s.used[i:]
	n := 0
	for _, u := range s.used {
		if u.addr == addr {
			n++
		}
	}
	if n >= s.lim.PerAddress || len(s.used) >= s.lim.Total {
		return false
	}
	s.used = append(s.used, startUse{addr: addr, at: now})
	return true
}
