package sshgw

import (
	"reflect"
	"slices"
	"sync"
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

// Reasons a session ended on the node's side.
const (
	reasonNodeLost    = "node connection lost"
	reasonNodeTimeout = "node keepalive timeout"
)

// keepaliveRequest is OpenSSH's keepalive; the gateway answers it itself.
const keepaliveRequest = "keepalive@openssh.com"

// relay carries everything between the user's connection and the node's
// until either side ends, then closes both and releases the lease.
func (c *clientConn) relay(client *ssh.ServerConn, clientChans <-chan ssh.NewChannel, clientReqs <-chan *ssh.Request) {
	node := c.node
	s := &session{
		c: c, client: client, node: node, sessionChans: map[ssh.Channel]*sessionChannel{}, register: make(chan *pair),
		log: c.log.With(zap.String("user", node.lease.User()), zap.String("node", node.lease.Node().Name), zap.Uint64("session_id", node.lease.ID())),
	}
	s.exitStatus.Store(-1)
	start := c.s.now()
	s.lastActive.Store(start.UnixNano())
	s.lastRecv[0].Store(start.UnixNano())
	s.lastRecv[1].Store(start.UnixNano())
	c.s.addSession(s)
	defer c.s.removeSession(s)
	defer func() {
		// A session the node's side ended (it hung up or stopped
		// answering) is a sign the node is gone; the balancer weighs it
		// with the node's health checks.
		if r := s.endReason.Load(); r != nil && (*r == reasonNodeLost || *r == reasonNodeTimeout) {
			node.lease.Fail()
			return
		}
		node.lease.Release()
	}()
	s.log.Info("ssh session started")

	stopKeepalive := s.startTimers()
	s.loop(clientChans, clientReqs)
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

// Select cases of the loop that are always there; each live pair adds two
// after them (its near and far request streams).
const (
	caseClientChans = iota
	caseNodeChans
	caseClientReqs
	caseNodeReqs
	caseRegister
	fixedCases
)

// mux is the loop's state: what it selects on, and what is still open.
type mux struct {
	cases   []reflect.SelectCase
	pairs   []*pair // pairs[k] owns cases fixedCases+2k (near) and fixedCases+2k+1 (far)
	open    int     // fixed streams still open
	opening int     // pipes started that have not registered yet

	clientGlobal, nodeGlobal *requestQueue // each leg's global requests, for the other
}

// closeCase stops selecting case i: a zero Chan is never selected.
func (m *mux) closeCase(i int) { m.cases[i].Chan = reflect.Value{} }

// loop is the session's one long-lived goroutine besides the data copies:
// it receives every channel open and every request of both connections and
// hands each off at once (channel opens to a pipe goroutine, requests to
// per-stream queues), so no stream ever waits on another and x/crypto's
// read loops never stall. It returns when both connections have closed and
// every channel's request streams have ended.
func (s *session) loop(clientChans <-chan ssh.NewChannel, clientReqs <-chan *ssh.Request) {
	m := &mux{
		cases: []reflect.SelectCase{
			caseClientChans: {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(clientChans)},
			caseNodeChans:   {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.node.chans)},
			caseClientReqs:  {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(clientReqs)},
			caseNodeReqs:    {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.node.reqs)},
			caseRegister:    {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.register)},
		},
		open:         4,
		clientGlobal: newRequestQueue(globalHandler(s.node.conn)),
		nodeGlobal:   newRequestQueue(globalHandler(s.client)),
	}
	defer m.clientGlobal.wait()
	defer m.nodeGlobal.wait()
	for m.open > 0 || m.opening > 0 || len(m.pairs) > 0 {
		i, v, ok := reflect.Select(m.cases)
		switch {
		case i == caseClientChans || i == caseNodeChans:
			s.onChannelOpen(m, i, v, ok)
		case i == caseClientReqs || i == caseNodeReqs:
			s.onGlobalRequest(m, i, v, ok)
		case i == caseRegister:
			m.opening--
			if p := v.Interface().(*pair); p != nil {
				m.pairs = append(m.pairs, p)
				m.cases = append(m.cases,
					reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.nearReqs)},
					reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.farReqs)})
			}
		default:
			s.onPairRequest(m, i, v, ok)
		}
	}
}

// onChannelOpen starts a pipe for a channel one leg opened, or, when that
// leg's channel stream ended, closes the other leg.
func (s *session) onChannelOpen(m *mux, i int, v reflect.Value, ok bool) {
	fromClient := i == caseClientChans
	if !ok {
		m.closeCase(i)
		m.open--
		switch {
		case fromClient:
			s.end("client disconnected")
			s.node.conn.Close()
		case s.end(reasonNodeLost):
			// Let the pipes tell open session channels and close them
			// cleanly (see sessionEOF) before the connection goes.
			s.wg.Add(1)
			go func() { defer s.wg.Done(); waitTimeout(&s.pipes, 5*time.Second); s.client.Close() }()
		default:
			s.client.Close()
		}
		return
	}
	m.opening++
	nc := v.Interface().(ssh.NewChannel)
	out := ssh.Conn(s.node.conn)
	if !fromClient {
		out = s.client
	}
	s.wg.Add(1)
	s.pipes.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.pipes.Done()
		s.pipe(nc, out, fromClient)
	}()
}

// onGlobalRequest passes a global request to the other leg, except those
// the gateway answers itself (keepalives) or never passes (host keys).
func (s *session) onGlobalRequest(m *mux, i int, v reflect.Value, ok bool) {
	if !ok {
		m.closeCase(i)
		m.open--
		return
	}
	r := v.Interface().(*ssh.Request)
	switch {
	case dropGlobal[r.Type]:
		if r.WantReply {
			_ = r.Reply(false, nil)
		}
	case r.Type == keepaliveRequest:
		if r.WantReply {
			_ = r.Reply(false, nil) // what OpenSSH answers; it proves we are alive
		}
	case i == caseClientReqs:
		m.clientGlobal.push(r)
	default:
		m.nodeGlobal.push(r)
	}
}

// onPairRequest queues a channel request for the pair's other side, or,
// when one side's request stream ended (it closed the channel), closes the
// other side once everything before the close has been passed on.
func (s *session) onPairRequest(m *mux, i int, v reflect.Value, ok bool) {
	k := (i - fixedCases) / 2
	p, fromNear := m.pairs[k], (i-fixedCases)%2 == 0
	if ok {
		r := v.Interface().(*ssh.Request)
		if fromNear {
			if p.audit != nil {
				p.audit.request(r)
			}
			p.toFar.push(r)
		} else {
			p.fromFar(r)
		}
		return
	}
	m.closeCase(i)
	s.wg.Add(1)
	if fromNear {
		go func() { defer s.wg.Done(); p.nearClosed() }()
	} else {
		go func() { defer s.wg.Done(); p.farClosed() }()
	}
	if !m.cases[fixedCases+2*k].Chan.IsValid() && !m.cases[fixedCases+2*k+1].Chan.IsValid() {
		m.pairs = slices.Delete(m.pairs, k, k+1)
		m.cases = slices.Delete(m.cases, fixedCases+2*k, fixedCases+2*k+2)
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
