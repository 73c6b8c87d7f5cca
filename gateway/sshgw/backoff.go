package sshgw

import (
	"net"
	"sync"
	"time"

	"github.com/poolgate/poolgate/internal/netx"
)

// backoff slows down addresses that keep failing to log in: after a number
// of failures each further failure is answered only after a delay that
// doubles up to a cap. Allowed networks are never slowed. Addresses are
// grouped as addrKey does (IPv6 by /64). It keeps at most maxTracked of
// them; when full, a new address takes the place of an arbitrary old one,
// so that filling the table never switches the back-off off for new
// addresses.
type backoff struct {
	cfg   BackoffConfig
	allow []*net.IPNet
	now   func() time.Time

	max int // maxTracked; smaller in tests

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
	b := &backoff{cfg: cfg, now: now, max: maxTracked, addrs: map[string]*failures{}}
	for _, s := range cfg.Allow {
		if _, n, err := net.ParseCIDR(s); err == nil {
			b.allow = append(b.allow, n)
		}
	}
	return b
}

func (b *backoff) allowed(addr net.Addr) bool {
	var ip net.IP
	if tcp, ok := addr.(*net.TCPAddr); ok {
		ip = tcp.IP
	} else if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		ip = net.ParseIP(host)
	}
	for _, n := range b.allow {
		if ip != nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

// failed records a failed attempt from addr and returns how long to wait
// before answering it.
func (b *backoff) failed(addr net.Addr) time.Duration {
	if b.allowed(addr) {
		return 0
	}
	key := netx.AddrKey(addr)
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweepLocked(now)
	f := b.addrs[key]
	if f == nil || now.Sub(f.last) >= b.cfg.Forget {
		if f == nil && len(b.addrs) >= b.max {
			for old := range b.addrs { // an arbitrary one: map order is random
				delete(b.addrs, old)
				break
			}
		}
		f = &failures{}
		b.addrs[key] = f
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
