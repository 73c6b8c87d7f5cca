package sshgw

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
)

// session is one user connection relayed to one node: what the balancer
// counts as one SSH session (one lease). It is owned by the goroutine
// running relay; Server keeps it in its set for notices.
type session struct {
	c      *clientConn
	client *ssh.ServerConn // the user's leg
	node   *nodeConn       // the gateway's login to the node
	log    *zap.Logger

	bytes      [2]atomic.Int64 // relayed, by direction (toNode, toClient)
	exitStatus atomic.Int64    // -1 until the node reports one
	channels   atomic.Int64
	lastActive atomic.Int64    // unix nanoseconds of the last data relayed
	lastRecv   [2]atomic.Int64 // unix nanoseconds of the last data received, by leg: client, node
	endReason  atomic.Pointer[string]

	mu           sync.Mutex                      // protects sessionChans and each one's eof
	sessionChans map[ssh.Channel]*sessionChannel // the client's session channels, for notices

	wg       sync.WaitGroup // every goroutine of this session but loop
	pipes    sync.WaitGroup // the channel pipes alone
	register chan *pair     // pipes hand their request streams to loop; nil: opening failed
}

// sessionChannel is a channel of SSH type "session" that the client opened
// (a shell, a command or a subsystem), where notices can be written to its
// stderr until EOF has been sent on it.
type sessionChannel struct {
	eof  bool
	told string // the last notice written, so none is written twice
}

// end records why the session ended; only the first reason counts. It
// reports whether this call set it.
func (s *session) end(reason string) bool {
	return s.endReason.CompareAndSwap(nil, &reason)
}

// close ends the session for reason, telling the user msg first.
func (s *session) close(reason, msg string) {
	if s.end(reason) && msg != "" {
		s.tell(msg, time.Second)
	}
	s.client.Close()
	s.node.conn.Close()
}

// tell is notice, waiting for it at most d: a channel write blocks while
// the client's window is full, and a client that stopped reading must not
// hold up a close or a shutdown. A write still blocked ends with an error
// when the connection closes.
func (s *session) tell(msg string, d time.Duration) {
	done := make(chan struct{})
	go func() { s.notice(msg); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// notice writes msg to the stderr of the user's open session channels
// (their terminal, or the stderr of a remote command) that have not had
// EOF: data after EOF is a protocol error that makes OpenSSH disconnect.
func (s *session) notice(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, sc := range s.sessionChans {
		if !sc.eof && sc.told != msg {
			sc.told = msg
			_, _ = ch.Stderr().Write([]byte(msg))
		}
	}
}

// sessionEOF passes the node's EOF to a session channel. If the node's
// connection failed (its channels end with an EOF the node never sent),
// the user is told first.
func (s *session) sessionEOF(near ssh.Channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.sessionChans[near]
	if sc == nil || sc.eof {
		return
	}
	if s.node.broken.Load() {
		_, _ = near.Stderr().Write([]byte("poolgate: the connection to node " + s.node.lease.Node().Name + " was lost.\n"))
	}
	sc.eof = true
	_ = near.CloseWrite()
}

// startTimers arms the keepalive and idle-timeout checks. They run on a
// timer, not a goroutine, so an idle session costs no stack for them.
//
// Keepalives work as OpenSSH's ServerAliveInterval: a leg from which
// nothing has been received, and to which no keepalive has been sent, for
// KeepaliveInterval is sent one, without waiting for the answer; any
// answer clears its count, and a leg that stays silent an interval after
// its KeepaliveCountMax-th unanswered keepalive is dead. A hung node is
// thus found interval × (count + 1) after it last spoke, at most three
// eighths of an interval late.
func (s *session) startTimers() (stop func()) {
	cfg := *s.c.cfg
	if cfg.KeepaliveInterval <= 0 && cfg.IdleTimeout <= 0 {
		return func() {}
	}
	// Check eight times per keepalive interval (so each keepalive goes out
	// within an eighth of an interval of its time, and a hung node is
	// found at most three eighths late), and at least twice per idle
	// timeout.
	period := time.Duration(1<<63 - 1)
	if cfg.KeepaliveInterval > 0 {
		period = max(cfg.KeepaliveInterval/8, 10*time.Millisecond)
	}
	if cfg.IdleTimeout > 0 {
		period = min(period, max(cfg.IdleTimeout/2, 10*time.Millisecond))
	}
	var mu sync.Mutex // protects timer and stopped
	var timer *time.Timer
	stopped := false
	var unanswered [2]atomic.Int32 // keepalives in flight, by leg: client, node
	var lastSent [2]int64          // when each leg was last sent a keepalive; only tick touches it
	legs := [2]ssh.Conn{s.client, s.node.conn}
	tick := func() {
		now := s.c.s.now().UnixNano()
		idle := time.Duration(now - s.lastActive.Load())
		if cfg.IdleTimeout > 0 && idle >= cfg.IdleTimeout {
			s.close("idle timeout", "poolgate: closing this connection after "+cfg.IdleTimeout.String()+" without activity.\n")
			return
		}
		if cfg.KeepaliveInterval > 0 {
			for leg, conn := range legs {
				silent := time.Duration(now - max(s.lastRecv[leg].Load(), lastSent[leg]))
				if silent < cfg.KeepaliveInterval {
					continue
				}
				if unanswered[leg].Load() >= int32(cfg.KeepaliveCountMax) {
					if leg == 0 {
						s.log.Info("client stopped answering keepalives")
						s.close("client keepalive timeout", "")
					} else {
						s.log.Info("node stopped answering keepalives")
						s.close(reasonNodeTimeout, "poolgate: node "+s.node.lease.Node().Name+" stopped responding; closing this connection.\n")
					}
					return
				}
				lastSent[leg] = now
				unanswered[leg].Add(1)
				go func() {
					// x/crypto sends one global request at a time, so
					// keepalives to a hung peer queue here (at most
					// KeepaliveCountMax of them) until the connection
					// closes.
					if _, _, err := conn.SendRequest(keepaliveRequest, true, nil); err == nil {
						unanswered[leg].Store(0)
					}
				}()
			}
		}
		mu.Lock()
		if !stopped {
			timer.Reset(period)
		}
		mu.Unlock()
	}
	mu.Lock()
	timer = time.AfterFunc(period, tick)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		timer.Stop()
		mu.Unlock()
	}
}
