package sshgw

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/internal/netx"
	"github.com/poolgate/poolgate/internal/ratelog"
)

// errBadVersion is a client whose first line is not an SSH-2.0
// identification: an SSH-1 client, or something else talking to the port.
var errBadVersion = errors.New("not an SSH-2.0 client")

// maxVersionLine is the longest identification line a client may send
// (RFC 4253 §4.2: 255 characters with CR LF).
const maxVersionLine = 255

// versionGate checks the client's first line as x/crypto reads it, so that
// a client that is not SSH-2.0 is told so and dropped at once, as OpenSSH
// drops it, instead of holding a pre-auth slot for the whole login grace
// time (x/crypto would skip non-SSH lines and then wait for a packet an
// SSH-1 client never sends). After the first line it only passes reads on.
type versionGate struct {
	net.Conn
	checked bool
	line    []byte
}

func (g *versionGate) Read(p []byte) (int, error) {
	if g.checked {
		return g.Conn.Read(p)
	}
	n, err := g.Conn.Read(p)
	for i := 0; i < n; i++ {
		if p[i] != '\n' {
			if g.line = append(g.line, p[i]); len(g.line) > maxVersionLine {
				return 0, g.refuse("Invalid SSH identification string.\r\n")
			}
			continue
		}
		line := bytes.TrimSuffix(g.line, []byte("\r"))
		switch {
		case bytes.HasPrefix(line, []byte("SSH-2.0-")), bytes.HasPrefix(line, []byte("SSH-1.99-")):
			g.checked, g.line = true, nil
		case bytes.HasPrefix(line, []byte("SSH-")):
			return 0, g.refuse("Protocol major versions differ.\r\n")
		default:
			return 0, g.refuse("Invalid SSH identification string.\r\n")
		}
	}
	return n, err
}

// refuse tells the client why, as OpenSSH does, and closes.
func (g *versionGate) refuse(msg string) error {
	_ = g.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = g.Conn.Write([]byte(msg))
	_ = g.Conn.Close()
	return errBadVersion
}

// preauthLog logs connections that failed before authentication at Info,
// at most one line per interval: a scanner or a flood must not flood the
// log, and the lines it would have written are counted in the next one.
type preauthLog struct {
	log   *zap.Logger
	limit ratelog.Limiter
}

func (l *preauthLog) failed(client, reason string, err error) {
	suppressed, ok := l.limit.Allow()
	if !ok {
		return
	}
	fields := []zap.Field{zap.String("client", client), zap.String("reason", reason)}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int("similar_since_last_line", suppressed))
	}
	l.log.Info("ssh connection failed before authentication", fields...)
}

// refuse tells a connection that found no pre-auth slot (see
// netx.Server.Refused) why, and logs it.
func (s *Server) refuse(nc net.Conn, key string, err error) {
	s.metrics.authFailed("none", gwmetrics.TooManyUnauthentic)
	msg := "poolgate: too many connections are logging in at once; please try again in a moment.\r\n"
	reason := fmt.Sprintf("too many connections logging in (max_unauthenticated %d)", s.cfg.MaxUnauthenticated)
	if errors.Is(err, netx.ErrAddressSlotsFull) {
		msg = "poolgate: too many connections from your address are logging in at once; please try again in a moment.\r\n"
		reason = fmt.Sprintf("too many connections logging in from %s (max_unauthenticated_per_address %d)", key, s.cfg.MaxUnauthenticatedPerAddress)
	}
	s.preauth.failed(nc.RemoteAddr().String(), reason, nil)
	// Lines before the version string are allowed (RFC 4253 §4.2); ssh -v
	// shows this one.
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = nc.Write([]byte(msg))
}
