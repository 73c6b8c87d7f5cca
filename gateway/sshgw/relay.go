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

// relayStats counts what a connection carried.
type relayStats struct {
	toNode, toClient atomic.Int64
	exitStatus       atomic.Int64 // -1 until the node reports one
	channels         atomic.Int64
}

// relay carries everything between the user's connection and the node's
// until either side ends, then closes both and releases the lease.
func (c *clientConn) relay(down *ssh.ServerConn, downChans <-chan ssh.NewChannel, downReqs <-chan *ssh.Request) {
	up := c.up
	defer up.lease.Release()
	node := up.lease.Node().Name
	log := c.log.With(zap.String("user", down.User()), zap.String("node", node), zap.Uint64("session_id", up.lease.ID()))
	start := c.s.now()
	log.Info("ssh session started")
	st := &relayStats{}
	st.exitStatus.Store(-1)

	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	// Either connection ending ends the other.
	run(func() { _ = down.Wait(); up.conn.Close() })
	run(func() { _ = up.conn.Wait(); down.Close() })
	run(func() { forwardGlobal(downReqs, up.conn) })
	run(func() { forwardGlobal(up.reqs, down) })
	run(func() { forwardChannels(downChans, up.conn, st, &wg, true) })
	run(func() { forwardChannels(up.chans, down, st, &wg, false) })
	wg.Wait()

	fields := []zap.Field{
		zap.Duration("duration", c.s.now().Sub(start).Round(time.Millisecond)),
		zap.Int64("bytes_to_node", st.toNode.Load()),
		zap.Int64("bytes_to_client", st.toClient.Load()),
		zap.Int64("channels", st.channels.Load()),
	}
	if code := st.exitStatus.Load(); code >= 0 {
		fields = append(fields, zap.Int64("exit_status", code))
	}
	log.Info("ssh session ended", fields...)
}

// forwardGlobal passes global requests on in order, with their replies.
func forwardGlobal(in <-chan *ssh.Request, out ssh.Conn) {
	for r := range in {
		if dropGlobal[r.Type] {
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
			continue
		}
		ok, payload, err := out.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			if err != nil {
				ok, payload = false, nil
			}
			_ = r.Reply(ok, payload)
		}
	}
}

// forwardChannels opens, on out, a twin of every channel opened toward us,
// and pipes the pair. fromClient says which way the channel goes, for the
// byte counts. Each pair's goroutines join wg.
func forwardChannels(in <-chan ssh.NewChannel, out ssh.Conn, st *relayStats, wg *sync.WaitGroup, fromClient bool) {
	for nc := range in {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipeChannel(nc, out, st, fromClient)
		}()
	}
}

// pipeChannel opens nc's twin on out first, so that a refusal reaches the
// opener with the far side's own reason, then relays data, extended data,
// EOF, requests and close between them.
func pipeChannel(nc ssh.NewChannel, out ssh.Conn, st *relayStats, fromClient bool) {
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
	st.channels.Add(1)
	// Counters: "near→far" is toward the node when the client opened it.
	nearToFar, farToNear := &st.toNode, &st.toClient
	if !fromClient {
		nearToFar, farToNear = &st.toClient, &st.toNode
	}

	var wg sync.WaitGroup
	// One direction of the pair: data and stderr from src to dst; EOF is
	// passed on once both streams of src are drained.
	half := func(dst, src ssh.Channel, n *atomic.Int64) {
		var streams sync.WaitGroup
		streams.Add(2)
		go func() { defer streams.Done(); k, _ := io.Copy(dst, src); n.Add(k) }()
		go func() { defer streams.Done(); k, _ := io.Copy(dst.Stderr(), src.Stderr()); n.Add(k) }()
		streams.Wait()
		_ = dst.CloseWrite()
	}
	// Each mutex is held while a request arriving on that side is being
	// forwarded and answered; closing that side takes it first, so a reply
	// is never overtaken by the close of its channel (a client that sent
	// "exec" must see the reply before the channel closes, even when the
	// command finishes at once).
	var nearReplying, farReplying sync.Mutex
	farDataDone := make(chan struct{})
	wg.Add(4)
	go func() { defer wg.Done(); half(far, near, nearToFar) }()
	go func() { defer wg.Done(); half(near, far, farToNear); close(farDataDone) }()
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
		forwardChannelRequests(farReqs, near, &farReplying, st)
		// The far side closed. Close toward the opener only after the far
		// side's data has been delivered, so no output or exit status is lost.
		<-farDataDone
		nearReplying.Lock()
		near.Close()
		nearReplying.Unlock()
	}()
	wg.Wait()
}

// forwardChannelRequests passes a channel's requests on in order, with
// replies, holding replying while each is in flight. When st is set, an
// exit-status is recorded for the log.
func forwardChannelRequests(in <-chan *ssh.Request, out ssh.Channel, replying *sync.Mutex, st *relayStats) {
	for r := range in {
		if st != nil && r.Type == "exit-status" && len(r.Payload) >= 4 {
			st.exitStatus.Store(int64(binary.BigEndian.Uint32(r.Payload)))
		}
		replying.Lock()
		ok, err := out.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			_ = r.Reply(ok && err == nil, nil)
		}
		replying.Unlock()
	}
}
