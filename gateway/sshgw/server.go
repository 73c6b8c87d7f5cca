package sshgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/netx"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("sshgw: server closed")

// Balancer is what the gateway needs from the balancer.
type Balancer interface {
	// Acquire picks a node for the user, never one named in avoid.
	Acquire(user string, proto balancer.Protocol, client string, avoid ...string) (*balancer.Lease, error)
	// Peek says where the user's next session would go, taking nothing.
	Peek(user string, proto balancer.Protocol, avoid ...string) (balancer.Node, error)
	// AcquireOn takes a lease on the named node, moving the user's pin.
	AcquireOn(user string, proto balancer.Protocol, client, node string, by balancer.PinOrigin) (*balancer.Lease, error)
	// Choosable lists the nodes the user may name now.
	Choosable(user string, proto balancer.Protocol) []balancer.Node
	// UserSessions counts the user's live sessions.
	UserSessions(user string) int
	// NodeFailed reports that a dial or login to the node failed: its
	// users move on their next session.
	NodeFailed(node string, proto balancer.Protocol)
}

// Starter brings up a node when the pool has none (scale from zero).
type Starter interface {
	// StartNode is called when no node can take a session. It reports
	// until when the user may wait for a node that is starting, or false
	// when none is coming. It is called again while the user waits.
	StartNode() (until time.Time, ok bool)
}

// Server is the SSH gateway. Create it with New.
type Server struct {
	cfg      Config
	keys     *Keys
	bal      Balancer
	starter  Starter // nil: no scale from zero
	log      *zap.Logger
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	now      func() time.Time
	backoff  *backoff
	metrics  *Metrics    // nil: none
	unauth   *slots      // connections not yet past authentication
	preauth  *preauthLog // rate-limited log of connections that failed before authentication
	keyStore *keyStore   // whether the users' key folder can be read

	// closing is closed when the server stops accepting; users waiting
	// for a starting node stop waiting.
	closing chan struct{}
	// shutdownMsg is the last shutdown notice sent, nil before Shutdown.
	shutdownMsg atomic.Pointer[string]

	// mu protects listeners, conns, sessions and closed.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	sessions  map[*session]struct{}
	closed    bool
	wg        sync.WaitGroup // one per Serve loop and per connection
}

// Options carries the server's collaborators besides its balancer.
type Options struct {
	// Keys are the gateway's host key, user CA and the nodes' known host
	// keys (LoadKeys); required.
	Keys *Keys
	// Logger receives the server's log; nil means none.
	Logger *zap.Logger
	// Starter, if set, lets users who find no node wait while it starts
	// one (scale from zero); nil means they are refused at once.
	Starter Starter
	// Metrics, if set, records logins, picks and relayed bytes; nil means
	// none.
	Metrics *Metrics
}

// New returns a server that places users with bal; cfg's zero fields take
// their defaults.
func New(cfg Config, bal Balancer, opts Options) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	keys := opts.Keys
	if keys == nil || keys.HostKey == nil || keys.CA == nil || keys.KnownHosts == nil {
		return nil, errors.New("sshgw: keys missing (use LoadKeys)")
	}
	if bal == nil {
		return nil, errors.New("sshgw: no balancer")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	d := &net.Dialer{}
	return &Server{
		cfg: cfg, keys: keys, bal: bal, log: log, starter: opts.Starter, metrics: opts.Metrics,
		dial: d.DialContext, now: time.Now,
		backoff:   newBackoff(cfg.AuthBackoff, time.Now),
		preauth:   &preauthLog{log: log, interval: time.Second, now: time.Now},
		keyStore:  &keyStore{root: cfg.AuthorizedKeys.Root(), log: log},
		unauth:    &slots{max: cfg.MaxUnauthenticated, perAddr: cfg.MaxUnauthenticatedPerAddress, byAddr: map[string]int{}},
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
		sessions:  map[*session]struct{}{},
		closing:   make(chan struct{}),
	}, nil
}

// Serve accepts connections on ln until Shutdown or Close, and then
// returns ErrServerClosed. Each connection is served in its own goroutine.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.log.Info("ssh gateway listening", zap.String("addr", ln.Addr().String()))
	_ = s.keyStore.check() // says so at start when the key folder is missing
	var backoff netx.AcceptBackoff
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			if d, ok := backoff.Temporary(err); ok {
				s.log.Error("accept failed; retrying", zap.Error(err), zap.Duration("backoff", d))
				continue
			}
			return fmt.Errorf("accepting ssh connections: %w", err)
		}
		backoff.Reset()
		key := netx.AddrKey(nc.RemoteAddr())
		if ok, full := s.unauth.take(key); !ok {
			s.metrics.authFailed("too_many_unauthenticated")
			msg := "poolgate: too many connections are logging in at once; please try again in a moment.\r\n"
			reason := fmt.Sprintf("too many connections logging in (max_unauthenticated %d)", s.cfg.MaxUnauthenticated)
			if full == "address" {
				msg = "poolgate: too many connections from your address are logging in at once; please try again in a moment.\r\n"
				reason = fmt.Sprintf("too many connections logging in from %s (max_unauthenticated_per_address %d)", key, s.cfg.MaxUnauthenticatedPerAddress)
			}
			s.preauth.failed(nc.RemoteAddr().String(), reason, nil)
			// Lines before the version string are allowed (RFC 4253 §4.2);
			// ssh -v shows this one.
			_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = nc.Write([]byte(msg))
			nc.Close()
			continue
		}
		// The connection is tracked as handle uses it, so that closing it
		// at shutdown lets its held bytes (the last notice) out first.
		nc = newBatchConn(withQuickAck(nc))
		if !s.track(nc) {
			s.unauth.release(key)
			nc.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(nc)
			defer func() {
				if r := recover(); r != nil {
					s.log.Error("ssh connection panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
				}
			}()
			s.handle(nc, key)
		}()
	}
}

func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[nc] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(nc net.Conn) {
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
}

// addSession registers an authenticated session for shutdown notices. A
// session whose login finished after Shutdown began is registered too: it
// was counted (its lease is taken), so it gets the notice and the grace
// like the others (its session channels are told as they open, see
// shutdownNotice).
func (s *Server) addSession(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[ss] = struct{}{}
}

func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

// noticeAll tells every user with an open session msg, waiting at most d
// for the slowest (see session.tell). Session channels opened later are
// told msg as they open (shutdownNotice).
func (s *Server) noticeAll(msg string, d time.Duration) {
	s.shutdownMsg.Store(&msg)
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range sessions {
		wg.Add(1)
		go func() { defer wg.Done(); ss.tell(msg, d) }()
	}
	wg.Wait()
}

// closeListeners stops accepting.
func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		close(s.closing)
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
		delete(s.listeners, ln)
	}
}

// Shutdown stops accepting connections, tells users with open sessions
// that the gateway is stopping and by when, and waits for the sessions to
// end until ctx is done; then it closes them. It returns ctx's error if it
// had to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	when := "shortly"
	if dl, ok := ctx.Deadline(); ok {
		// Rounded up: "in 0s" would say the connection is already gone.
		when = "in " + (max(time.Until(dl), 0).Truncate(time.Second) + time.Second).String()
	}
	s.noticeAll("poolgate: the gateway is shutting down; this connection will be closed "+when+". Reconnect then to continue.\n", time.Second)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.noticeAll("poolgate: the gateway is shutting down now.\n", time.Second)
		s.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting, closes every connection and waits for their
// goroutines to finish.
func (s *Server) Close() error {
	s.closeListeners()
	s.closeConns()
	s.wg.Wait()
	return nil
}

// closeConns closes every connection at once. Each close lets the bytes
// its connection still holds out first (see batchConn), so the notices
// just written reach their users; a peer that does not read holds up only
// its own close.
func (s *Server) closeConns() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for nc := range s.conns {
		conns = append(conns, nc)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, nc := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); nc.Close() }()
	}
	wg.Wait()
}
