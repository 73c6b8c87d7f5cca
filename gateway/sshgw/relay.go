package sshgw

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
)

// Global requests that are never passed across: they are about the host
// keys of the leg they arrive on, and passing them would teach the client
// the node's keys as the gateway's.
var dropGlobal = map[string]bool{
	"hostkeys-00@openssh.com":       true,
	"hostkeys-prove-00@openssh.com": true,
}

// keepaliveRequest is OpenSSH's keepalive; the gateway answers it itself.
const keepaliveRequest = "keepalive@openssh.com"

// session is one user connection relayed to one node. It is owned by the
// goroutine running relay; Server keeps it in its set for notices.
type session struct {
	c    *clientConn
	down *ssh.ServerConn
	up   *upstream
	log  *zap.Logger

	toNode, toClient atomic.Int64
	exitStatus       atomic.Int64 // -1 until the node reports one
	channels         atomic.Int64
	lastActive       atomic.Int64 // unix nanoseconds of the last data relayed
	endReason        atomic.Pointer[string]

	mu     sync.Mutex             // protects shells and each shell's eof
	shells map[ssh.Channel]*shell // client-side session channels, for notices

	wg    sync.WaitGroup // every goroutine of this session
	pipes sync.WaitGroup // the channel pipes alone
}

// shell is a client-side session channel, where notices can be written
// until EOF has been sent on it.
type shell struct{ eof bool }

// relay carries everything between the user's connection and the node's
// until either side ends, then closes both and releases the lease.
func (c *clientConn) relay(down *ssh.ServerConn, downChans <-chan ssh.NewChannel, downReqs <-chan *ssh.Request) {
	up := c.up
	defer up.lease.Release()
	s := &session{
		c: c, down: down, up: up, shells: map[ssh.Channel]*shell{},
		log: c.log.With(zap.String("user", down.User()), zap.String("node", up.lease.Node().Name), zap.Uint64("session_id", up.lease.ID())),
	}
	s.exitStatus.Store(-1)
	start := c.s.now()
	s.lastActive.Store(start.UnixNano())
	if !c.s.addSession(s) {
		down.Close()
		up.conn.Close()
		return
	}
	defer c.s.removeSession(s)
	s.log.Info("ssh session started")

	stopKeepalive := s.startTimers()
	s.wg.Add(4)
	go func() { // client-opened channels; ends when the client's connection does
		defer s.wg.Done()
		s.forwardChannels(downChans, up.conn, true)
		s.end("client disconnected")
		up.conn.Close()
	}()
	go func() { // node-opened channels; ends when the node's connection does
		defer s.wg.Done()
		s.forwardChannels(up.chans, down, false)
		if s.end("node connection lost") {
			// Let the pipes tell open session channels and close them
			// cleanly (see shellEOF) before the connection goes.
			waitTimeout(&s.pipes, 5*time.Second)
		}
		down.Close()
	}()
	go func() { defer s.wg.Done(); forwardGlobal(downReqs, up.conn) }()
	go func() { defer s.wg.Done(); forwardGlobal(up.reqs, down) }()
	s.wg.Wait()
	stopKeepalive()

	fields := []zap.Field{
		zap.Duration("duration", c.s.now().Sub(start).Round(time.Millisecond)),
		zap.Int64("bytes_to_node", s.toNode.Load()),
		zap.Int64("bytes_to_client", s.toClient.Load()),
		zap.Int64("channels", s.channels.Load()),
	}
	if r := s.endReason.Load(); r != nil {
		fields = append(fields, zap.String("reason", *r))
	}
	if code := s.exitStatus.Load(); code >= 0 {
		fields = append(fields, zap.Int64("exit_status", code))
	}
	s.log.Info("ssh session ended", fields...)
}

// end records why the session ended; only the first reason counts. It
// reports whether this call set it.
func (s *session) end(reason string) bool {
	return s.endReason.CompareAndSwap(nil, &reason)
}

// close ends the session for reason, telling the user msg first.
func (s *session) close(reason, msg string) {
	if s.end(reason) && msg != "" {
		s.notice(msg)
	}
	s.down.Close()
	s.up.conn.Close()
}

// notice writes msg to the stderr of the user's open session channels
// (their terminal, or the stderr of a remote command) that have not had
// EOF: data after EOF is a protocol error that makes OpenSSH disconnect.
func (s *session) notice(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, sh := range s.shells {
		if !sh.eof {
			_, _ = ch.Stderr().Write([]byte(msg))
		}
	}
}

// shellEOF passes the node's EOF to a session channel. If the node's
// connection failed (its channels end with an EOF the node never sent),
// the user is told first.
func (s *session) shellEOF(near ssh.Channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shells[near]
	if sh == nil || sh.eof {
		return
	}
	if s.up.broken.Load() {
		_, _ = near.Stderr().Write([]byte("poolgate: the connection to node " + s.up.lease.Node().Name + " was lost.\n"))
	}
	sh.eof = true
	_ = near.CloseWrite()
}

// startTimers arms the keepalive and idle-timeout checks. They run on a
// timer, not a goroutine, so an idle session costs no stack for them.
func (s *session) startTimers() (stop func()) {
	cfg := s.c.s.cfg
	if cfg.KeepaliveInterval <= 0 && cfg.IdleTimeout <= 0 {
		return func() {}
	}
	// Check at the keepalive interval, and at least twice per idle timeout.
	period := time.Duration(1<<63 - 1)
	if cfg.KeepaliveInterval > 0 {
		period = cfg.KeepaliveInterval
	}
	if cfg.IdleTimeout > 0 {
		period = min(period, max(cfg.IdleTimeout/2, 10*time.Millisecond))
	}
	var mu sync.Mutex // protects timer and stopped
	var timer *time.Timer
	stopped := false
	missed := [2]int{}
	var tick func()
	tick = func() {
		idle := time.Duration(s.c.s.now().UnixNano() - s.lastActive.Load())
		if cfg.IdleTimeout > 0 && idle >= cfg.IdleTimeout {
			s.close("idle timeout", "poolgate: closing this connection after "+cfg.IdleTimeout.String()+" without activity.\n")
			return
		}
		if cfg.KeepaliveInterval > 0 && idle >= cfg.KeepaliveInterval {
			for i, conn := range []ssh.Conn{s.down, s.up.conn} {
				if ping(conn, cfg.KeepaliveInterval) {
					missed[i] = 0
				} else {
					missed[i]++
				}
			}
			if missed[0] >= cfg.KeepaliveCountMax {
				s.log.Info("client stopped answering keepalives")
				s.close("client keepalive timeout", "")
				return
			}
			if missed[1] >= cfg.KeepaliveCountMax {
				s.log.Info("node stopped answering keepalives")
				s.close("node keepalive timeout", "poolgate: node "+s.up.lease.Node().Name+" stopped responding; closing this connection.\n")
				return
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

// waitTimeout waits for wg, or until d has passed.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// ping sends a keepalive and reports whether any answer (OpenSSH answers
// "failure") came within timeout. A peer that never answers leaves the
// request pending until the connection closes.
func ping(conn ssh.Conn, timeout time.Duration) bool {
	answered := make(chan bool, 1)
	go func() {
		_, _, err := conn.SendRequest(keepaliveRequest, true, nil)
		answered <- err == nil
	}()
	select {
	case ok := <-answered:
		return ok
	case <-time.After(timeout):
		return false
	}
}

// forwardGlobal passes global requests on in order, with their replies,
// without ever making the sender's read loop wait.
func forwardGlobal(in <-chan *ssh.Request, out ssh.Conn) {
	q := newRequestQueue(func(r *ssh.Request) {
		ok, payload, err := out.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			if err != nil {
				ok, payload = false, nil
			}
			_ = r.Reply(ok, payload)
		}
	})
	for r := range in {
		switch {
		case dropGlobal[r.Type]:
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		case r.Type == keepaliveRequest:
			if r.WantReply {
				_ = r.Reply(false, nil) // what OpenSSH answers; it proves we are alive
			}
		default:
			q.push(r)
		}
	}
	q.wait()
}

// requestQueue forwards requests in arrival order from a worker goroutine
// that exists only while requests are pending, so a far side that is slow
// to reply never stalls the near side's read loop (x/crypto stops reading
// a connection once one request channel's small buffer is full).
type requestQueue struct {
	handle  func(*ssh.Request)
	mu      sync.Mutex // protects pending and running
	pending []*ssh.Request
	running bool
	idle    sync.WaitGroup // held while a worker runs
}

func newRequestQueue(handle func(*ssh.Request)) *requestQueue {
	return &requestQueue{handle: handle}
}

// maxPendingRequests bounds a queue; past it the request is refused at
// once rather than held without limit.
const maxPendingRequests = 1024

func (q *requestQueue) push(r *ssh.Request) {
	q.mu.Lock()
	if len(q.pending) >= maxPendingRequests {
		q.mu.Unlock()
		if r.WantReply {
			_ = r.Reply(false, nil)
		}
		return
	}
	q.pending = append(q.pending, r)
	if q.running {
		q.mu.Unlock()
		return
	}
	q.running = true
	q.idle.Add(1)
	q.mu.Unlock()
	go q.work()
}

func (q *requestQueue) work() {
	defer q.idle.Done()
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.running = false
			q.pending = nil
			q.mu.Unlock()
			return
		}
		r := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		q.mu.Unlock()
		q.handle(r)
	}
}

// wait returns once no worker is running.
func (q *requestQueue) wait() { q.idle.Wait() }

// forwardChannels opens, on out, a twin of every channel opened toward us,
// and pipes the pair. fromClient says which way the channel goes.
func (s *session) forwardChannels(in <-chan ssh.NewChannel, out ssh.Conn, fromClient bool) {
	for nc := range in {
		s.wg.Add(1)
		s.pipes.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.pipes.Done()
			s.pipe(nc, out, fromClient)
		}()
	}
}

// pipe opens nc's twin on out first, so that a refusal reaches the opener
// with the far side's own reason, then relays data, the node's stderr, EOF,
// requests and close between them.
func (s *session) pipe(nc ssh.NewChannel, out ssh.Conn, fromClient bool) {
	far, farReqs, err := out.OpenChannel(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			_ = nc.Reject(oce.Reason, oce.Message)
		} else {
			_ = nc.Reject(ssh.ConnectionFailed, "poolgate: "+err.Error())
		}
		return
	}
	near, nearReqs, err := nc.Accept()
	if err != nil {
		far.Close()
		return
	}
	s.channels.Add(1)
	isShell := fromClient && nc.ChannelType() == "session"
	if isShell {
		s.mu.Lock()
		s.shells[near] = &shell{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.shells, near)
			s.mu.Unlock()
		}()
	}
	nearToFar, farToNear := &s.toNode, &s.toClient
	if !fromClient {
		nearToFar, farToNear = &s.toClient, &s.toNode
	}

	// Each mutex is held while a request arriving on that side is being
	// forwarded and answered; closing that side takes it first, so a reply
	// is never overtaken by the close of its channel (a client that sent
	// "exec" must see the reply before the channel closes, even when the
	// command finishes at once).
	var nearReplying, farReplying sync.Mutex
	var wg sync.WaitGroup

	// Data far → near: stdout, and for sessions the node's stderr. EOF is
	// passed on when both are drained. Extended data is relayed only from
	// the node on session channels: no SSH implementation sends it
	// otherwise, and an unread stream only stalls its own channel.
	farDone := make(chan struct{})
	farStreams := int32(1)
	if isShell {
		farStreams = 2
	}
	var farLeft atomic.Int32
	farLeft.Store(farStreams)
	farStreamDone := func() {
		if farLeft.Add(-1) == 0 {
			if isShell {
				s.shellEOF(near)
			} else {
				_ = near.CloseWrite()
			}
			close(farDone)
		}
	}
	wg.Add(int(farStreams) + 2)
	if isShell {
		go func() { defer wg.Done(); s.copy(near.Stderr(), far.Stderr(), farToNear); farStreamDone() }()
	}
	go func() { defer wg.Done(); s.copy(near, far, farToNear); farStreamDone() }()
	go func() {
		defer wg.Done()
		forwardChannelRequests(nearReqs, far, &nearReplying, nil)
		// The opener closed its end: close ours toward the far side.
		farReplying.Lock()
		far.Close()
		farReplying.Unlock()
	}()
	go func() {
		defer wg.Done()
		forwardChannelRequests(farReqs, near, &farReplying, &s.exitStatus)
		// The far side closed. Close toward the opener only after the far
		// side's data has been delivered, so no output or exit status is lost.
		<-farDone
		nearReplying.Lock()
		near.Close()
		nearReplying.Unlock()
	}()
	// Data near → far, on this goroutine.
	s.copy(far, near, nearToFar)
	_ = far.CloseWrite()
	wg.Wait()
}

// Copy buffers: an idle stream waits in Read with a small buffer of its
// own; a stream that fills it switches to a pooled large one, and back
// once it goes quiet. Idle sessions thus hold ~1 KiB per stream instead of
// 32 KiB.
const (
	smallBuf = 1 << 10
	largeBuf = 32 << 10
)

var largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}

// copy relays src to dst until EOF or error, counting bytes into n and
// recording activity for the keepalive and idle checks.
func (s *session) copy(dst io.Writer, src io.Reader, n *atomic.Int64) {
	small := make([]byte, smallBuf)
	buf := small
	var large *[]byte
	defer func() {
		if large != nil {
			largeBufs.Put(large)
		}
	}()
	for {
		k, err := src.Read(buf)
		if k > 0 {
			s.lastActive.Store(s.c.s.now().UnixNano())
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		switch {
		case large == nil && k == len(buf):
			large = largeBufs.Get().(*[]byte)
			buf = *large
		case large != nil && k < smallBuf:
			largeBufs.Put(large)
			large, buf = nil, small
		}
	}
}

// forwardChannelRequests passes a channel's requests on in order, with
// replies, holding replying while each is in flight. Requests queue so
// that a slow far side never stalls the near side's read loop. When exit
// is set, an exit-status is recorded there for the log.
func forwardChannelRequests(in <-chan *ssh.Request, out ssh.Channel, replying *sync.Mutex, exit *atomic.Int64) {
	q := newRequestQueue(func(r *ssh.Request) {
		replying.Lock()
		defer replying.Unlock()
		ok, err := out.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			_ = r.Reply(ok && err == nil, nil)
		}
	})
	for r := range in {
		if exit != nil && r.Type == "exit-status" && len(r.Payload) >= 4 {
			exit.Store(int64(binary.BigEndian.Uint32(r.Payload)))
		}
		q.push(r)
	}
	q.wait()
}
