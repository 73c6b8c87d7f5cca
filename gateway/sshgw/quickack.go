package sshgw

import (
	"net"
	"sync/atomic"
	"syscall"
)

// quickAckReads is how many reads on each leg are followed by an immediate
// ACK: enough for key exchange, authentication and opening the first
// session, after which normal delayed ACKs resume.
const quickAckReads = 64

// quickAckConn makes the kernel acknowledge at once after each of a
// connection's first reads. OpenSSH leaves Nagle's algorithm on for
// non-interactive sessions, so it holds a small packet until its previous
// one is acknowledged; a gateway that has just sent data is in Linux's
// delayed-ACK mode and waits up to 40 ms to acknowledge. With two
// handshakes in a chain that stalled about one login in five by 40 ms
// (seen with tcpdump, measured with bench/sshbench).
type quickAckConn struct {
	net.Conn
	raw  syscall.RawConn
	left atomic.Int32
}

// withQuickAck wraps c if it is a TCP connection on a system with
// TCP_QUICKACK; otherwise it returns c.
func withQuickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok || !quickAckSupported {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{Conn: c, raw: raw}
	q.left.Store(quickAckReads)
	return q
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.left.Load() > 0 && c.left.Add(-1) >= 0 {
		_ = c.raw.Control(setQuickAck)
	}
	return n, err
}
