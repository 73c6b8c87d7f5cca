package netx

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// AddrKey groups client addresses for per-address limits: an IPv4 address
// alone, an IPv6 address by its /64 (one host, or one customer site,
// usually holds a whole /64, so a finer key would cost an attacker
// nothing). IPv4-mapped IPv6 addresses count as IPv4.
func AddrKey(addr net.Addr) string {
	var ip netip.Addr
	if tcp, ok := addr.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(tcp.IP)
	} else if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		ip = ap.Addr()
	} else {
		return addr.String()
	}
	if !ip.IsValid() {
		return addr.String()
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// AcceptBackoff paces an accept loop through temporary errors (EMFILE
// and the like), so that they are waited out rather than taking the
// whole gateway down: 5 ms, doubling to a second. Its zero value is
// ready; one per loop.
type AcceptBackoff struct{ d time.Duration }

// Temporary reports whether err is a temporary accept error, and then
// sleeps for the next delay, which it returns.
func (b *AcceptBackoff) Temporary(err error) (time.Duration, bool) {
	var te interface{ Temporary() bool }
	if !errors.As(err, &te) || !te.Temporary() {
		return 0, false
	}
	b.d = min(max(2*b.d, 5*time.Millisecond), time.Second)
	time.Sleep(b.d)
	return b.d, true
}

// Reset starts the delays afresh after a successful accept.
func (b *AcceptBackoff) Reset() { b.d = 0 }
