package sshgw

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
)

// pair is a relayed channel: near is the side that opened it (the client
// for a shell, the node for a -R forward), far its twin on the other leg.
// Requests from each side queue for the other.
type pair struct {
	near, far         ssh.Channel
	nearReqs, farReqs <-chan *ssh.Request
	toFar, toNear     *requestQueue // near's requests, far's requests
	// Each mutex is held while a request from that side is forwarded and
	// answered; closing that side takes it first, so a reply is never
	// overtaken by the close of its channel (a client that sent "exec"
	// must see the reply before the channel closes, even when the command
	// ends at once).
	nearReplying, farReplying sync.Mutex
	farDone                   chan struct{} // closed when far's data and EOF have been passed on
	exit                      *atomic.Int64 // where far's exit-status is recorded

	// exited is closed once far's exit-status or exit-signal has been
	// passed to near, farReqsEnd once far's request stream ended (far
	// closed the channel) and its requests were passed on. A session
	// channel's EOF waits for either (see pipe).
	exited     chan struct{}
	exitedOnce sync.Once
	farReqsEnd chan struct{}

	// audit watches a client's session channel with recording on; nil
	// otherwise.
	audit *channelAudit
}

// channelHandler returns the handler that passes a channel request on to
// out and its reply back, holding replying meanwhile (see pair).
func channelHandler(out ssh.Channel, replying *sync.Mutex) func(*ssh.Request) {
	return func(r *ssh.Request) {
		replying.Lock()
		defer replying.Unlock()
		ok, err := out.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			_ = r.Reply(ok && err == nil, nil)
		}
	}
}

// isExit reports whether r carries the end of the far side's command.
func isExit(r *ssh.Request) bool { return r.Type == "exit-status" || r.Type == "exit-signal" }

// fromFar queues a request of far's for near, recording an exit status.
func (p *pair) fromFar(r *ssh.Request) {
	if p.exit != nil && r.Type == "exit-status" && len(r.Payload) >= 4 {
		p.exit.Store(int64(binary.BigEndian.Uint32(r.Payload)))
		if p.audit != nil {
			p.audit.exit.Store(int64(binary.BigEndian.Uint32(r.Payload)))
		}
	}
	p.toNear.push(r)
}

// nearClosed closes the channel toward far once near's requests have been
// passed on: the opener closed its end.
func (p *pair) nearClosed() {
	p.toFar.wait()
	p.farReplying.Lock()
	p.far.Close()
	p.farReplying.Unlock()
}

// farClosed closes the channel toward near once far's requests (its exit
// status) and data have been passed on: the far side closed its end.
func (p *pair) farClosed() {
	p.toNear.wait()
	close(p.farReqsEnd)
	<-p.farDone
	p.nearReplying.Lock()
	p.near.Close()
	p.nearReplying.Unlock()
}

// pipe opens nc's twin on out first, so that a refusal reaches the opener
// with the far side's own reason, hands the pair's request streams to loop,
// and relays data, the node's stderr and EOF between them.
func (s *session) pipe(nc ssh.NewChannel, out ssh.Conn, fromClient bool) {
	if rs := s.c.s.rec; fromClient && nc.ChannelType() == "session" && rs != nil && rs.Config().Required {
		if err := rs.Writable(); err != nil {
			s.log.Warn("session channel refused: recording.required, and recordings cannot be written", zap.Error(err))
			_ = nc.Reject(ssh.Prohibited, "poolgate: sessions here are recorded, and recording is failing just now; please try again in a few minutes, or tell your administrator")
			s.register <- nil
			return
		}
	}
	far, farReqs, err := out.OpenChannel(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			_ = nc.Reject(oce.Reason, oce.Message)
		} else {
			_ = nc.Reject(ssh.ConnectionFailed, "poolgate: "+err.Error())
		}
		s.register <- nil
		return
	}
	near, nearReqs, err := nc.Accept()
	if err != nil {
		far.Close()
		go ssh.DiscardRequests(farReqs)
		s.register <- nil
		return
	}
	s.channels.Add(1)
	isSession := fromClient && nc.ChannelType() == "session"
	var audit *channelAudit
	if rs := s.c.s.rec; isSession && rs != nil {
		audit = newChannelAudit(s, rs)
		defer audit.finish()
	}
	if isSession {
		s.mu.Lock()
		sc := &sessionChannel{}
		s.sessionChans[near] = sc
		// Opened while the gateway shuts down: told at once, in its own
		// goroutine (a fresh channel has window for it, but the client
		// might not read).
		if msg := s.c.s.shutdownMsg.Load(); msg != nil {
			sc.told = *msg
			go func() { _, _ = near.Stderr().Write([]byte(*msg)) }()
		}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.sessionChans, near)
			s.mu.Unlock()
		}()
	}
	nearToFar, farToNear := toNode, toClient
	if !fromClient {
		nearToFar, farToNear = toClient, toNode
	}
	p := &pair{
		near: near, far: far, nearReqs: nearReqs, farReqs: farReqs, exit: &s.exitStatus,
		farDone: make(chan struct{}), exited: make(chan struct{}), farReqsEnd: make(chan struct{}), audit: audit,
	}
	p.toFar = newRequestQueue(channelHandler(far, &p.nearReplying))
	toNear := channelHandler(near, &p.farReplying)
	p.toNear = newRequestQueue(func(r *ssh.Request) {
		toNear(r)
		if isExit(r) {
			p.exitedOnce.Do(func() { close(p.exited) })
		}
	})
	s.register <- p

	// Data far → near: stdout, and for sessions the node's stderr. EOF is
	// passed on when both are drained. Extended data is relayed only from
	// the node on session channels: no SSH implementation sends it
	// otherwise, and an unread stream only stalls its own channel.
	var wg sync.WaitGroup
	farStreams := int32(1)
	if isSession {
		farStreams = 2
	}
	var farLeft atomic.Int32
	farLeft.Store(farStreams)
	farStreamDone := func() {
		if farLeft.Add(-1) == 0 {
			if isSession {
				// OpenSSH sends data, EOF, exit-status, close. Clients
				// such as a ControlMaster and PuTTY's plink close the
				// channel as soon as they see EOF, and x/crypto sends
				// nothing on a channel the client closed: so EOF waits
				// until the exit status has been passed on, or the node
				// closed the channel without one.
				select {
				case <-p.exited:
				case <-p.farReqsEnd:
				}
				s.sessionEOF(near)
			} else {
				_ = near.CloseWrite()
			}
			close(p.farDone)
		}
	}
	wg.Add(int(farStreams))
	var nearOut, nearErr, farIn io.Writer = near, near.Stderr(), far
	if audit != nil {
		nearOut, nearErr, farIn = tap{w: near, a: audit}, tap{w: near.Stderr(), a: audit, stderr: true}, tap{w: far, a: audit, input: true}
	}
	if isSession {
		go func() { defer wg.Done(); s.copy(nearErr, far.Stderr(), farToNear); farStreamDone() }()
	}
	go func() { defer wg.Done(); s.copy(nearOut, far, farToNear); farStreamDone() }()
	// Data near → far, on this goroutine.
	s.copy(farIn, near, nearToFar)
	_ = far.CloseWrite()
	wg.Wait()
}

// Copy buffers: an idle stream waits in Read with a small buffer of its
// own; a stream that fills it switches to a pooled large one, and back
// once it goes quiet. Idle sessions thus hold 256 bytes per stream instead of
// 32 KiB.
const (
	smallBuf = 256
	largeBuf = 32 << 10
)

var largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}

// copy relays src to dst until EOF or error, counting bytes in direction
// dir and recording activity for the keepalive and idle checks.
func (s *session) copy(dst io.Writer, src io.Reader, dir int) {
	n := &s.bytes[dir]
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
			now := s.c.s.now().UnixNano()
			s.lastActive.Store(now)
			s.lastRecv[dir].Store(now) // toNode data comes from the client (leg 0), toClient from the node (1)
			n.Add(int64(k))
			s.c.s.metrics.relayed(dir, k)
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
