package rdpgw

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/internal/netx"
)

// Directions of a relayed connection.
const (
	toNode   = gwmetrics.ToNode
	toClient = gwmetrics.ToClient
)

// conn is one relayed RDP connection.
type conn struct {
	s      *Server
	client net.Conn
	node   net.Conn
	log    *zap.Logger

	bytes    [2]atomic.Int64
	last     [2]atomic.Int64 // unix nanos of the last byte each way
	activity chan struct{}   // a byte moved (capacity 1)
	done     chan struct{}   // the relay ended
	reason   atomic.Pointer[string]
}

// handle serves one accepted connection, counted as unproven in slot
// until the node has kept it past authentication.
func (s *Server) handle(nc net.Conn, slot *netx.Slot) {
	defer nc.Close()
	accepted := time.Now()
	clientAddr := nc.RemoteAddr().String()
	log := s.log.With(zap.String("client", clientAddr))

	_ = nc.SetReadDeadline(accepted.Add(s.cfg.FirstPacketTimeout))
	cr, err := ReadConnectionRequest(nc, s.cfg.MaxFirstPacket)
	if err != nil {
		s.refused(log, "rdp connection dropped before routing", zap.String("reason", err.Error()))
		return
	}
	_ = nc.SetReadDeadline(time.Time{})

	// The cookie's name is a claim anyone can type: it chooses where the
	// connection goes (the claimed user's node), never whom it counts
	// for. So the log names it as a claim.
	claim, truncated := cr.User()
	picking := time.Now()
	prefer := ""
	if claim != "" {
		_, prefer = s.bal.PinnedUser(claim, truncated, balancer.RDP)
		log = log.With(zap.String("claimed_user", claim))
	}
	node, err := s.bal.Route(balancer.RDP, prefer)
	s.m.Picked(time.Since(picking).Seconds())
	if err != nil {
		s.m.Refused(gwmetrics.NoNode)
		s.refused(log, "rdp connection refused: no node can take it", zap.Error(err))
		return
	}
	log = log.With(zap.String("node", node.Name))
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
	upstream, err := s.dial(ctx, "tcp", node.RDP)
	cancel()
	if err != nil {
		s.m.Refused(gwmetrics.NodeUnreachable)
		log.Warn("rdp connection dropped: node unreachable", zap.String("addr", node.RDP), zap.Error(err))
		return
	}
	defer upstream.Close()
	if !s.front.Track(upstream) { // shutting down
		return
	}
	defer s.front.Untrack(upstream)
	n, err := upstream.Write(cr.Raw)
	s.m.Relayed(gwmetrics.ToNode, n)
	if err != nil {
		log.Warn("rdp connection dropped: writing to the node failed", zap.Error(err))
		return
	}
	c := &conn{s: s, client: nc, node: upstream, log: log, activity: make(chan struct{}, 1), done: make(chan struct{})}
	now := time.Now().UnixNano()
	c.last[toNode].Store(now)
	c.last[toClient].Store(now)
	log.Debug("rdp connection routed", zap.String("routing_token", cr.RoutingToken))

	var lease *balancer.Lease
	var proofWG sync.WaitGroup
	proofWG.Add(1)
	go func() {
		defer proofWG.Done()
		if !c.awaitProof(accepted) {
			return
		}
		slot.Release()
		l, err := s.bal.Hold(node.Name, balancer.RDP, clientAddr)
		if err != nil {
			log.Warn("rdp connection kept by its node but not counted", zap.Error(err))
			return
		}
		lease = l
		log.Info("rdp session started, counted on its node as unverified (plain RDP proves no user)", zap.Uint64("session_id", l.ID()))
	}()
	c.relay()
	close(c.done)
	proofWG.Wait()
	fields := []zap.Field{
		zap.Duration("duration", time.Since(accepted).Round(time.Millisecond)),
		zap.Int64("bytes_to_node", c.bytes[toNode].Load()),
		zap.Int64("bytes_to_client", c.bytes[toClient].Load()),
	}
	if r := c.reason.Load(); r != nil {
		fields = append(fields, zap.String("reason", *r))
	}
	if lease != nil {
		lease.Release()
		log.Info("rdp session ended", append(fields, zap.Uint64("session_id", lease.ID()))...)
		return
	}
	log.Info("rdp connection ended uncounted", fields...)
}

// awaitProof waits until the node has kept the connection past
// authentication (see Config.ProofTime) and reports true, or false when
// the relay ended first; a connection not proven by ProofTimeout after
// accepted is closed.
func (c *conn) awaitProof(accepted time.Time) bool {
	cfg := c.s.cfg
	mark, waiting := c.s.testHooks()
	if mark == nil {
		wait := time.NewTimer(cfg.ProofTime)
		defer wait.Stop()
		mark = wait.C
	}
	select {
	case <-mark:
	case <-c.done:
		return false
	}
	giveUp := time.NewTimer(max(time.Until(accepted.Add(cfg.ProofTimeout)), 0))
	defer giveUp.Stop()
	for {
		// The client has spoken past its first packet (its TLS
		// handshake at least) and the node has answered with more than
		// an unauthenticated peer ever gets.
		if c.bytes[toClient].Load() >= cfg.ProofBytes && c.bytes[toNode].Load() > 0 {
			return true
		}
		if waiting != nil {
			waiting()
		}
		select {
		case <-c.activity:
		case <-c.done:
			return false
		case <-giveUp.C:
			c.end("not proven within proof_timeout")
			return false
		}
	}
}

// end records why the connection ends (the first reason wins) and closes
// both legs.
func (c *conn) end(reason string) {
	c.reason.CompareAndSwap(nil, &reason)
	c.client.Close()
	c.node.Close()
}

// relay copies bytes both ways until either leg ends, then closes both.
func (c *conn) relay() {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.copy(toNode, c.node, c.client) }()
	go func() { defer wg.Done(); c.copy(toClient, c.client, c.node) }()
	wg.Wait()
}

// copy moves bytes from src to dst, counting them. A read that waited
// idle_timeout ends the connection unless the other direction moved
// within it.
func (c *conn) copy(dir int, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	idle := c.s.cfg.IdleTimeout
	other := 1 - dir
	for {
		if idle > 0 {
			_ = src.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				c.end(legName(1-dir) + " closed")
				return
			}
			c.bytes[dir].Add(int64(n))
			c.s.m.Relayed(dir, n)
			c.last[dir].Store(time.Now().UnixNano())
			select {
			case c.activity <- struct{}{}:
			default:
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && idle > 0 {
			if time.Since(time.Unix(0, c.last[other].Load())) < idle {
				continue
			}
			c.end("idle_timeout")
			return
		}
		if errors.Is(err, io.EOF) {
			c.end(legName(dir) + " closed")
		} else {
			c.end(legName(dir) + " failed: " + err.Error())
		}
		return
	}
}

// legName names the leg that bytes of dir come from.
func legName(dir int) string {
	if dir == toNode {
		return "client"
	}
	return "node"
}
