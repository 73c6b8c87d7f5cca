package sshgw

import (
	"context"
	"errors"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/recording"
	"github.com/poolgate/poolgate/internal/netx"
	"github.com/poolgate/poolgate/internal/ratelog"
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
	cfg      Config                 // as started: listeners, slots, back-off
	live     atomic.Pointer[Config] // for each new connection; SetConfig replaces it
	keys     *Keys
	bal      Balancer
	starter  Starter // nil: no scale from zero
	busy     func(node string) bool
	rec      *recording.Store // nil: no recording
	pwStarts *startLimiter    // bounds the password logins that use starter; nil: none may
	log      *zap.Logger
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	now      func() time.Time
	backoff  *backoff
	metrics  *Metrics    // nil: none
	preauth  *preauthLog // rate-limited log of connections that failed before authentication
	keyStore *keyStore   // whether the users' key folder can be read
	refusals refusalTime // how long nodes take to refuse a password
	certs    *certIssuer // signs and reuses node-login certificates
	identity Identity    // nil: no sign-in with an identity provider

	// front accepts, holds the pre-auth slots (connections not yet past
	// authentication) and tracks the connections.
	front *netx.Server
	// closing is closed when the server stops accepting; users waiting
	// for a starting node stop waiting.
	closing <-chan struct{}
	// shutdownMsg is the last shutdown notice sent, nil before Shutdown.
	shutdownMsg atomic.Pointer[string]

	mu       sync.Mutex // protects sessions
	sessions map[*session]struct{}
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
	// Recorder, if set, records sessions with a PTY and writes the audit
	// lines of commands (gateway/recording; section recording).
	Recorder *recording.Store
	// Busy, if set, reports that the node a user was just placed on is
	// saturated while a new node starts: the user is told so in one line.
	Busy func(node string) bool
	// PasswordStarts, if set, lets password logins use Starter within its
	// bounds, each logged at Info with the client; nil means only users
	// proven by a key or certificate do (scale_from_zero: keys_only), and
	// a password login that finds no node is refused at once.
	PasswordStarts *StartLimit
	// Metrics, if set, records logins, picks and relayed bytes; nil means
	// none.
	Metrics *Metrics
	// Identity, if set, signs in users who have no authorized_keys file
	// (keyboard-interactive, device flow) and binds the key they proved;
	// nil means keys and passwords only.
	Identity Identity
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
	s := &Server{
		cfg: cfg, keys: keys, bal: bal, log: log, starter: opts.Starter, busy: opts.Busy, rec: opts.Recorder, metrics: opts.Metrics, identity: opts.Identity,
		dial: d.DialContext, now: time.Now,
		backoff:  newBackoff(cfg.AuthBackoff, time.Now),
		preauth:  &preauthLog{log: log, limit: ratelog.Limiter{Every: time.Second}},
		keyStore: &keyStore{root: cfg.AuthorizedKeys.Root(), log: log},
		sessions: map[*session]struct{}{},
	}
	s.live.Store(&cfg)
	s.certs = newCertIssuer(keys.CA, cfg.SignaturesPerUserPerMinute, func() time.Time { return s.now() }, opts.Metrics)
	if opts.PasswordStarts != nil {
		s.pwStarts = newStartLimiter(*opts.PasswordStarts, func() time.Time { return s.now() })
	}
	s.front = &netx.Server{
		Name:    "ssh",
		Logger:  log,
		Slots:   &netx.Slots{Max: cfg.MaxUnauthenticated, PerAddress: cfg.MaxUnauthenticatedPerAddress},
		Refused: s.refuse,
		// The connection is tracked as handle uses it, so that closing it
		// at shutdown lets its held bytes (the last notice) out first.
		Wrap:    func(nc net.Conn) net.Conn { return newBatchConn(withQuickAck(nc)) },
		Handler: func(nc net.Conn, slot *netx.Slot) { s.handle(nc, slot.Release) },
	}
	s.closing = s.front.Stopping()
	return s, nil
}

// SetConfig puts new settings in force for the connections that come
// from now on (a reload): keys, passwords, limits, algorithms, node
// choice, timeouts. Connections already open keep theirs. It returns the
// keys that changed but take effect only at a restart (the pre-auth caps
// and back-off, made at start), or an error naming a bad key, in which
// case nothing changes.
func (s *Server) SetConfig(cfg Config) (needRestart []string, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	old := s.cfg
	if cfg.MaxUnauthenticated != old.MaxUnauthenticated {
		needRestart = append(needRestart, "max_unauthenticated")
	}
	if cfg.MaxUnauthenticatedPerAddress != old.MaxUnauthenticatedPerAddress {
		needRestart = append(needRestart, "max_unauthenticated_per_address")
	}
	if !reflect.DeepEqual(cfg.AuthBackoff, old.AuthBackoff) {
		needRestart = append(needRestart, "auth_backoff")
	}
	if cfg.SignaturesPerUserPerMinute != old.SignaturesPerUserPerMinute {
		needRestart = append(needRestart, "signatures_per_user_per_minute")
	}
	s.live.Store(&cfg)
	return needRestart, nil
}

// Serve accepts connections on ln until Shutdown or Close, and then
// returns ErrServerClosed. Each connection is served in its own goroutine.
func (s *Server) Serve(ln net.Listener) error {
	_ = s.keyStore.check() // says so at start when the key folder is missing
	err := s.front.Serve(ln)
	if errors.Is(err, netx.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
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

// Shutdown stops accepting connections, tells users with open sessions
// that the gateway is stopping and by when, and waits for the sessions to
// end until ctx is done; then it closes them. It returns ctx's error if it
// had to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.front.StopAccepting()
	when := "shortly"
	if dl, ok := ctx.Deadline(); ok {
		// Rounded up: "in 0s" would say the connection is already gone.
		when = "in " + (max(time.Until(dl), 0).Truncate(time.Second) + time.Second).String()
	}
	s.noticeAll("poolgate: the gateway is shutting down; this connection will be closed "+when+". Reconnect then to continue.\n", time.Second)
	if err := s.front.Wait(ctx); err != nil {
		s.noticeAll("poolgate: the gateway is shutting down now.\n", time.Second)
		// Each close lets the bytes its connection still holds out first
		// (see batchConn), so the notices just written reach their users;
		// a peer that does not read holds up only its own close.
		_ = s.front.Close()
		return err
	}
	return nil
}

// Close stops accepting, closes every connection and waits for their
// goroutines to finish.
func (s *Server) Close() error { return s.front.Close() }

// Drain stops accepting and waits, telling no one, until every connection
// has ended or ctx ends (then it returns ctx's error and leaves them
// open: Shutdown tells their users and closes them). A gateway that
// handed its listeners to a new binary drains.
func (s *Server) Drain(ctx context.Context) error { return s.front.Drain(ctx) }
