package rdpgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/internal/netx"
	"github.com/poolgate/poolgate/internal/ratelog"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("rdpgw: server closed")

// Balancer is what the RDP gateway needs from the balancer.
type Balancer interface {
	// PinnedUser names the user a claim stands for and the node they
	// are pinned to ("" for none), taking no lease.
	PinnedUser(claim string, prefix bool, proto balancer.Protocol) (user, node string)
	// Route names the node for a connection that takes no lease yet:
	// prefer if it can take proto, else the least-loaded node.
	Route(proto balancer.Protocol, prefer string) (balancer.Node, error)
	// Hold counts a proven connection on its node for no proven user
	// (balancer.Unverified): no pin, no per-user count.
	Hold(node string, proto balancer.Protocol, client string) (*balancer.Lease, error)
}

// Options carries the server's collaborators besides its balancer. The
// zero value is usable.
type Options struct {
	// Logger receives the server's log; nil means none.
	Logger *zap.Logger
	// Dial connects to a node; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Metrics, if set, records the RDP front end's part of the shared
	// families (gateway/gwmetrics): the time to choose a node, relayed
	// bytes and the connections no node (or no pre-auth slot) could take.
	// Nil records nothing.
	Metrics *gwmetrics.Front
}

// Server is the RDP gateway. Create it with New, run it with Serve, stop
// it with Shutdown or Close.
type Server struct {
	cfg  Config
	bal  Balancer
	log  *zap.Logger
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	m    *gwmetrics.Front // nil: no metrics

	// front accepts, holds the slots of connections not yet proven
	// (unproven) and tracks both legs of every connection.
	front    *netx.Server
	unproven *netx.Slots

	// Test hooks: proofMark, when set, stands for proof_time's timer;
	// proofWaiting is called each time a connection past it is checked
	// and found not yet proven.
	mu           sync.Mutex // protects proofMark and proofWaiting
	proofMark    <-chan time.Time
	proofWaiting func()

	refusals ratelog.Limiter // refusals logged (refused)
}

// testHooks returns the test hooks (nil outside tests).
func (s *Server) testHooks() (mark <-chan time.Time, waiting func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proofMark, s.proofWaiting
}

// New returns a server that routes with bal; cfg's zero fields take their
// defaults.
func New(cfg Config, bal Balancer, opts Options) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if bal == nil {
		return nil, errors.New("rdpgw: no balancer")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	s := &Server{
		cfg: cfg, bal: bal, log: log, dial: dial, m: opts.Metrics,
		unproven: &netx.Slots{Max: cfg.MaxUnproven, PerAddress: cfg.MaxUnprovenPerAddress},
		refusals: ratelog.Limiter{Every: time.Second},
	}
	s.front = &netx.Server{Name: "rdp", Logger: log, Slots: s.unproven, Refused: s.refuse, Handler: s.handle}
	return s, nil
}

// Serve accepts connections on ln until Shutdown or Close, and then
// returns ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	err := s.front.Serve(ln)
	if errors.Is(err, netx.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// refuse logs a connection that found no slot among the unproven.
func (s *Server) refuse(nc net.Conn, _ string, err error) {
	why := fmt.Sprintf("too many unproven connections (max_unproven %d)", s.cfg.MaxUnproven)
	if errors.Is(err, netx.ErrAddressSlotsFull) {
		why = fmt.Sprintf("too many unproven connections from this address (max_unproven_per_address %d)", s.cfg.MaxUnprovenPerAddress)
	}
	s.m.Refused(gwmetrics.TooManyUnauthentic)
	s.refused(s.log, "rdp connection refused", zap.String("client", nc.RemoteAddr().String()), zap.String("reason", why))
}

// refused logs a refusal, at most one a second with the count of those
// held back: anyone can open connections to be refused.
func (s *Server) refused(log *zap.Logger, msg string, fields ...zap.Field) {
	s.refusals.Info(log, msg, fields...)
}

// Unproven counts the connections not yet proven (for ops and tests).
func (s *Server) Unproven() int { return s.unproven.InUse() }

// Shutdown stops accepting and waits for open connections to end until
// ctx is done; then it closes them (RDP has no way to tell the user
// beforehand). It returns ctx's error if it had to cut connections.
func (s *Server) Shutdown(ctx context.Context) error { return s.front.Shutdown(ctx) }

// Close stops accepting, closes every connection and waits for their
// goroutines to finish.
func (s *Server) Close() error { return s.front.Close() }

// Drain stops accepting and waits until every connection has ended or
// ctx ends (then it returns ctx's error and leaves them open). A gateway
// that handed its listeners to a new binary drains.
func (s *Server) Drain(ctx context.Context) error { return s.front.Drain(ctx) }
