package rdpgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/netx"
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
	// AcquireOn takes the lease of a proven connection on its node.
	AcquireOn(user string, proto balancer.Protocol, client, node string, by balancer.PinOrigin) (*balancer.Lease, error)
}

// Options carries the server's collaborators besides its balancer. The
// zero value is usable.
type Options struct {
	// Logger receives the server's log; nil means none.
	Logger *zap.Logger
	// Dial connects to a node; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Server is the RDP gateway. Create it with New, run it with Serve, stop
// it with Shutdown or Close.
type Server struct {
	cfg  Config
	bal  Balancer
	log  *zap.Logger
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// mu protects every field below.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	unproven  int            // connections not yet proven, in all
	perAddr   map[string]int // ... by client address (IPv6 by /64)
	wg        sync.WaitGroup // one per Serve loop and per connection

	// Test hooks: proofMark, when set, stands for proof_time's timer;
	// proofWaiting is called each time a connection past it is checked
	// and found not yet proven.
	proofMark    <-chan time.Time
	proofWaiting func()
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
	return &Server{
		cfg: cfg, bal: bal, log: log, dial: dial,
		listeners: map[net.Listener]struct{}{}, conns: map[net.Conn]struct{}{}, perAddr: map[string]int{},
	}, nil
}

// Serve accepts connections on ln until Shutdown or Close, and then
// returns ErrServerClosed.
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
	s.log.Info("rdp gateway listening", zap.String("addr", ln.Addr().String()))
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
			return fmt.Errorf("accepting rdp connections: %w", err)
		}
		backoff.Reset()
		key := netx.AddrKey(nc.RemoteAddr())
		if why := s.admit(nc, key); why != "" {
			s.log.Info("rdp connection refused", zap.String("client", nc.RemoteAddr().String()), zap.String("reason", why))
			nc.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(nc)
			defer func() {
				if r := recover(); r != nil {
					s.log.Error("rdp connection panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
				}
			}()
			s.handle(nc, key)
		}()
	}
}

// admit counts a new connection as unproven and tracks it, or says why
// not.
func (s *Server) admit(nc net.Conn, key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return "shutting down"
	case s.unproven >= s.cfg.MaxUnproven:
		return fmt.Sprintf("too many unproven connections (max_unproven %d)", s.cfg.MaxUnproven)
	case s.perAddr[key] >= s.cfg.MaxUnprovenPerAddress:
		return fmt.Sprintf("too many unproven connections from this address (max_unproven_per_address %d)", s.cfg.MaxUnprovenPerAddress)
	}
	s.unproven++
	s.perAddr[key]++
	s.conns[nc] = struct{}{}
	s.wg.Add(1)
	return ""
}

// proven stops counting a connection from key as unproven.
func (s *Server) proven(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unproven--
	if s.perAddr[key]--; s.perAddr[key] <= 0 {
		delete(s.perAddr, key)
	}
}

func (s *Server) untrack(nc net.Conn) {
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
}

// Unproven counts the connections not yet proven (for ops and tests).
func (s *Server) Unproven() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unproven
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
		delete(s.listeners, ln)
	}
}

// Shutdown stops accepting and waits for open connections to end until
// ctx is done; then it closes them (RDP has no way to tell the user
// beforehand). It returns ctx's error if it had to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
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

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for nc := range s.conns {
		nc.Close()
	}
}
