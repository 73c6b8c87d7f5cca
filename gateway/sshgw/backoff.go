package sshgw

import (
	"net"
	"sync"
	"time"
)

// backoff slows down addresses that keep failing to log in: after a number
// of failures each further failure is answered only after a delay that
// doubles up to a cap. Allowed networks are never slowed. It keeps at most
// maxTracked addresses; past that, new addresses are not tracked until old
// ones are forgotten.
type backoff struct {
	cfg   BackoffConfig
	allow []*net.IPNet
	now   func() time.Time

	mu    sync.Mutex // protects addrs and swept
	addrs map[string]*failures
	swept time.Time
}

type failures struct {
	count int
	last  time.Time
}

const maxTracked = 100_000

func newBackoff(cfg BackoffConfig, now func() time.Time) *backoff {
	b := &backoff{cfg: cfg, now: now, addrs: map[string]*failures{}}
	for _, s := range cfg.Allow {
		if _, n, err := net.ParseCIDR(s); err == nil {
			b.allow = append(b.allow, n)
		}
	}
	return b
}

// ipOf returns the IP of a connection's remote address, as a map key.
func ipOf(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

func (b *backoff) allowed(ip string) bool {
	parsed := net.ParseIP(ip)
	for _, n := range b.allow {
		if parsed != nil && n.Contains(parsed) {
			return true
		}
	}
	return false
}

// failed records a failed attempt from ip and returns how long to wait
// before answering it.
func (b *backoff) failed(ip string) time.Duration {
	if b.allowed(ip) {
		return 0
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweepLocked(now)
	f := b.addrs[ip]
	if f == nil || now.Sub(f.last) >= b.cfg.Forget {
		if f == nil && len(b.addrs) >= maxTracked {
			return 0
		}
		f = &failures{}
		b.addrs[ip] = f
	}
	f.count++
	f.last = now
	over := f.count - b.cfg.After
	if over <= 0 {
		return 0
	}
	d := b.cfg.Delay
	for i := 1; i < over && d < b.cfg.MaxDelay; i++ {
		d *= 2
	}
	return min(d, b.cfg.MaxDelay)
}

// sweepLocked forgets stale addresses, at most once a minute.
func (b *backoff) sweepLocked(now time.Time) {
	if now.Sub(b.swept) < time.Minute {
		return
	}
	b.swept = now
	for ip, f := range b.addrs {
		if now.Sub(f.last) >= b.cfg.Forget {
			delete(b.addrs, ip)
		}
	}
}
