package httpgw

import (
	"crypto/tls"
	"errors"
	"syscall"
)

// dirty reports whether the hub sent anything on c while it sat idle in
// the pool, or closed it: a peek at the socket that does not wait
// (recv with MSG_PEEK|MSG_DONTWAIT), so a clean connection costs one
// system call and no goroutine. Any byte counts, TLS records included:
// a hub has nothing to say between answers.
func (c *hubConn) dirty() bool {
	if c.br.Buffered() > 0 {
		return true
	}
	nc := c.nc
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var buf [1]byte
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readiness
	}); err != nil {
		return true
	}
	switch {
	case rerr == nil:
		return true // n > 0: bytes waiting; n == 0: the hub closed
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EINTR):
		return false
	}
	return true
}
