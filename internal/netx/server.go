package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"
)

// ErrServerClosed is returned by Server.Serve after Shutdown or Close.
var ErrServerClosed = errors.New("netx: server closed")

// Server is the skeleton of a TCP front end: it accepts on any number of
// listeners, pacing itself through temporary accept errors; gives each
// connection a slot among the unproven ones (Slots) before its goroutine
// starts; serves each in a goroutine of its own that a panic does not
// take down; and tracks the connections, so that Shutdown can wait for
// them and Close can close them.
//
// Its zero value is ready (it accepts connections and closes them). Set
// the fields before the first Serve and leave them alone afterwards; a
// Server must not be copied once used.
type Server struct {
	// Name names the protocol in log lines and errors ("ssh", "rdp");
	// "" means "tcp".
	Name string
	// Logger receives the listening line, accept errors, refusals (when
	// Refused is nil) and panics; nil means none.
	Logger *zap.Logger
	// Handler serves one connection, in a goroutine of its own: the
	// connection Wrap returned, and its slot, which the handler releases
	// once the connection has proven itself (see Slot.Release). When the
	// handler returns, or panics, the connection is closed and the slot
	// released. nil means connections are closed at once.
	Handler func(nc net.Conn, slot *Slot)
	// Slots, if set, caps the connections not yet proven. A slot is taken
	// in the accept loop, before the connection's goroutine starts, so
	// that no cap can be passed by connections arriving together. nil
	// means no cap; the handler gets a nil slot.
	Slots *Slots
	// Refused, if set, is called in the accept loop with a connection
	// that found no slot, its address key and the cap it met
	// (ErrSlotsFull or ErrAddressSlotsFull); the connection is closed
	// after it returns. It may tell the client why, under a short write
	// deadline: the accept loop waits for it. nil means the refusal is
	// logged at Info.
	Refused func(nc net.Conn, key string, err error)
	// Wrap, if set, wraps each admitted connection before it is tracked
	// and handled, so that the connection Close closes is the one the
	// handler writes to (a buffering writer lets its held bytes out on
	// Close). nil means none.
	Wrap func(net.Conn) net.Conn

	// mu protects listeners, conns, closed, draining and stopping.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	draining  bool           // Drain closed the listeners; connections go on as before
	stopping  chan struct{}  // closed with closed
	wg        sync.WaitGroup // one per Serve loop and per connection goroutine
}

func (s *Server) initLocked() {
	if s.stopping == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]struct{}{}
		s.stopping = make(chan struct{})
	}
}

func (s *Server) name() string {
	if s.Name == "" {
		return "tcp"
	}
	return s.Name
}

func (s *Server) logger() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}

// Serve accepts connections on ln until Shutdown or Close, and then
// returns ErrServerClosed; any other accept error that is not temporary
// ends it too, wrapped. Serve may be called for several listeners.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.initLocked()
	if s.closed || s.draining {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	log := s.logger()
	log.Info(s.name()+" gateway listening", zap.String("addr", ln.Addr().String()))
	var backoff AcceptBackoff
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.notAccepting() {
				return ErrServerClosed
			}
			if d, ok := backoff.Temporary(err); ok {
				log.Error("accept failed; retrying", zap.Error(err), zap.Duration("backoff", d))
				continue
			}
			return fmt.Errorf("accepting %s connections: %w", s.name(), err)
		}
		backoff.Reset()
		if !s.admit(nc) {
			return ErrServerClosed
		}
	}
}

// admit takes a slot for nc, wraps, tracks and serves it. It reports
// false when the server has closed meanwhile.
func (s *Server) admit(nc net.Conn) bool {
	key := AddrKey(nc.RemoteAddr())
	var slot *Slot
	if s.Slots != nil {
		var err error
		if slot, err = s.Slots.Take(key); err != nil {
			s.refuse(nc, key, err)
			return true
		}
	}
	if s.Wrap != nil {
		nc = s.Wrap(nc)
	}
	if !s.track(nc, true) {
		slot.Release()
		nc.Close()
		return false
	}
	go s.serveConn(nc, slot)
	return true
}

func (s *Server) refuse(nc net.Conn, key string, err error) {
	defer nc.Close()
	if s.Refused != nil {
		s.Refused(nc, key, err)
		return
	}
	s.logger().Info(s.name()+" connection refused", zap.String("client", nc.RemoteAddr().String()), zap.String("reason", err.Error()))
}

func (s *Server) serveConn(nc net.Conn, slot *Slot) {
	defer s.wg.Done()
	defer s.Untrack(nc)
	defer slot.Release()
	defer nc.Close()
	defer func() {
		if r := recover(); r != nil {
			s.logger().Error(s.name()+" connection panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	if s.Handler != nil {
		s.Handler(nc, slot)
	}
}

// notAccepting reports whether the listeners were closed on purpose
// (StopAccepting, Drain, Shutdown or Close).
func (s *Server) notAccepting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.draining
}

// Track adds a connection that a handler opened (the leg to a node, say)
// to the set that Close closes, and reports false, tracking nothing, once
// the server is stopping: the handler should give up then. Untrack it
// when it is closed.
func (s *Server) Track(nc net.Conn) bool { return s.track(nc, false) }

func (s *Server) track(nc net.Conn, served bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if s.closed {
		return false
	}
	s.conns[nc] = struct{}{}
	if served {
		s.wg.Add(1)
	}
	return true
}

// Untrack removes nc from the set that Close closes.
func (s *Server) Untrack(nc net.Conn) {
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
}

// Stopping is closed once the server stops accepting (StopAccepting,
// Shutdown or Close): work that waits, such as a login waiting for a node
// to start, can end then.
func (s *Server) Stopping() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	return s.stopping
}

// StopAccepting closes every listener: Serve returns ErrServerClosed, and
// no connection is admitted or tracked from now on. Open connections go
// on.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if !s.closed {
		s.closed = true
		close(s.stopping)
	}
	for ln := range s.listeners {
		ln.Close()
		delete(s.listeners, ln)
	}
}

// Wait stops accepting, if the server still does, and waits until every
// Serve loop and connection goroutine has ended. If ctx ends first it
// returns ctx's error and leaves the connections open: Close cuts them.
func (s *Server) Wait(ctx context.Context) error {
	s.StopAccepting()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Drain closes every listener, so that Serve returns ErrServerClosed,
// and waits until every Serve loop and connection goroutine has ended or
// ctx ends (then it returns ctx's error and leaves the connections open).
// Unlike StopAccepting it changes nothing for the connections under way:
// a login still going on may open and Track its leg to a node, and
// Stopping stays open. For a front end whose listeners a new process took
// over; Shutdown or Close may follow.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.initLocked()
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
		delete(s.listeners, ln)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops accepting and waits for open connections to end until
// ctx is done; then it closes them. It returns ctx's error if it had to
// cut connections. A front end that can tell its users why composes
// StopAccepting, Wait and Close itself.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.Wait(ctx); err != nil {
		_ = s.Close()
		return err
	}
	return nil
}

// Close stops accepting, closes every tracked connection and waits for
// their goroutines to finish. The connections are closed all at once:
// one whose close waits (a wrapper letting held bytes out to a peer that
// does not read) holds up only its own.
func (s *Server) Close() error {
	s.StopAccepting()
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for nc := range s.conns {
		conns = append(conns, nc)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, nc := range conns {
		wg.Go(func() { nc.Close() })
	}
	wg.Wait()
	s.wg.Wait()
	return nil
}
