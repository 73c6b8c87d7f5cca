package sshgw

import (
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"slices"
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

// relay carries everything between the user's connection and the node's
// until either side ends, then closes both and releases the lease.
func (c *clientConn) relay(down *ssh.ServerConn, downChans <-chan ssh.NewChannel, downReqs <-chan *ssh.Request) {
	up := c.up
	defer up.lease.Release()
	s := &session{
		c: c, down: down, up: up, shells: map[ssh.Channel]*shell{}, register: make(chan *pair),
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
	s.loop(downChans, downReqs)
	s.wg.Wait()
	stopKeepalive()

	fields := []zap.Field{
		zap.Duration("duration", c.s.now().Sub(start).Round(time.Millisecond)),
		zap.Int64("bytes_to_node", s.bytes[toNode].Load()),
		zap.Int64("bytes_to_client", s.bytes[toClient].Load()),
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

// globalHandler returns the handler that passes one leg's global requests
// to the other, with their replies, in order.
func globalHandler(out ssh.Conn) func(*ssh.Request) {
	return func(r *ssh.Request) {
		ok, payload, err := out.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			if err != nil {
				ok, payload = false, nil
			}
			_ = r.Reply(ok, payload)
		}
	}
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

// pair is a relayed channel: near is the side that opened it, far its
// twin. Requests from each side queue for the other.
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
	farDone                   chan struct{} // closed when far's data has been passed on
	exit                      *atomic.Int64 // where far's exit-status is recorded
}

// loop is the session's one long-lived goroutine besides the data copies:
// it receives every channel open and every request of both connections and
// hands each off at once (channel opens to a pipe goroutine, requests to
// per-stream queues), so no stream ever waits on another and x/crypto's
// read loops never stall. It returns when both connections have closed and
// every channel's request streams have ended.
func (s *session) loop(downChans <-chan ssh.NewChannel, downReqs <-chan *ssh.Request) {
	up := s.up
	downGlobal := newRequestQueue(globalHandler(up.conn))
	upGlobal := newRequestQueue(globalHandler(s.down))
	defer downGlobal.wait()
	defer upGlobal.wait()

	// Fixed cases first, then two per live pair.
	const (
		caseDownChans = iota
		caseUpChans
		caseDownReqs
		caseUpReqs
		caseRegister
		fixed
	)
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(downChans)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(up.chans)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(downReqs)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(up.reqs)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.register)},
	}
	var pairs []*pair // pairs[i] owns cases fixed+2i (near) and fixed+2i+1 (far)
	open := 4         // fixed streams still open
	opening := 0      // pipes started that have not registered yet
	closeCase := func(i int) {
		cases[i].Chan = reflect.Value{} // a zero Chan is never selected
	}
	for open > 0 || opening > 0 || len(pairs) > 0 {
		i, v, ok := reflect.Select(cases)
		switch {
		case i == caseDownChans || i == caseUpChans:
			if !ok {
				closeCase(i)
				open--
				if i == caseDownChans {
					s.end("client disconnected")
					up.conn.Close()
				} else if s.end("node connection lost") {
					// Let the pipes tell open session channels and close
					// them cleanly (see shellEOF) before the connection goes.
					s.wg.Add(1)
					go func() { defer s.wg.Done(); waitTimeout(&s.pipes, 5*time.Second); s.down.Close() }()
				} else {
					s.down.Close()
				}
				continue
			}
			opening++
			nc := v.Interface().(ssh.NewChannel)
			fromClient := i == caseDownChans
			out := ssh.Conn(up.conn)
			if !fromClient {
				out = s.down
			}
			s.wg.Add(1)
			s.pipes.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.pipes.Done()
				s.pipe(nc, out, fromClient)
			}()
		case i == caseDownReqs || i == caseUpReqs:
			if !ok {
				closeCase(i)
				open--
				continue
			}
			r := v.Interface().(*ssh.Request)
			q := downGlobal
			if i == caseUpReqs {
				q = upGlobal
			}
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
		case i == caseRegister:
			opening--
			p := v.Interface().(*pair)
			if p == nil {
				continue
			}
			pairs = append(pairs, p)
			cases = append(cases,
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.nearReqs)},
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.farReqs)})
		default:
			k := (i - fixed) / 2
			p, fromNear := pairs[k], (i-fixed)%2 == 0
			if ok {
				r := v.Interface().(*ssh.Request)
				if fromNear {
					p.toFar.push(r)
				} else {
					if p.exit != nil && r.Type == "exit-status" && len(r.Payload) >= 4 {
						p.exit.Store(int64(binary.BigEndian.Uint32(r.Payload)))
					}
					p.toNear.push(r)
				}
				continue
			}
			closeCase(i)
			s.wg.Add(1)
			if fromNear {
				// The opener closed its end: close ours toward the far side
				// once its requests have been passed on.
				go func() {
					defer s.wg.Done()
					p.toFar.wait()
					p.farReplying.Lock()
					p.far.Close()
					p.farReplying.Unlock()
				}()
			} else {
				// The far side closed. Close toward the opener only after
				// its requests (exit-status) and data have been passed on.
				go func() {
					defer s.wg.Done()
					p.toNear.wait()
					<-p.farDone
					p.nearReplying.Lock()
					p.near.Close()
					p.nearReplying.Unlock()
				}()
			}
			if !cases[fixed+2*k].Chan.IsValid() && !cases[fixed+2*k+1].Chan.IsValid() {
				pairs = slices.Delete(pairs, k, k+1)
				cases = slices.Delete(cases, fixed+2*k, fixed+2*k+2)
			}
		}
	}
}

// pipe opens nc's twin on out first, so that a refusal reaches the opener
// with the far side's own reason, hands the pair's request streams to loop,
// and relays data, the node's stderr and EOF between them.
func (s *session) pipe(nc ssh.NewChannel, out ssh.Conn, fromClient bool) {
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
	nearToFar, farToNear := toNode, toClient
	if !fromClient {
		nearToFar, farToNear = toClient, toNode
	}
	p := &pair{near: near, far: far, nearReqs: nearReqs, farReqs: farReqs, farDone: make(chan struct{}), exit: &s.exitStatus}
	p.toFar = newRequestQueue(channelHandler(far, &p.nearReplying))
	p.toNear = newRequestQueue(channelHandler(near, &p.farReplying))
	s.register <- p

	// Data far → near: stdout, and for sessions the node's stderr. EOF is
	// passed on when both are drained. Extended data is relayed only from
	// the node on session channels: no SSH implementation sends it
	// otherwise, and an unread stream only stalls its own channel.
	var wg sync.WaitGroup
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
			close(p.farDone)
		}
	}
	wg.Add(int(farStreams))
	if isShell {
		go func() { defer wg.Done(); s.copy(near.Stderr(), far.Stderr(), farToNear); farStreamDone() }()
	}
	go func() { defer wg.Done(); s.copy(near, far, farToNear); farStreamDone() }()
	// Data near → far, on this goroutine.
	s.copy(far, near, nearToFar)
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
			s.lastActive.Store(s.c.s.now().UnixNano())
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
