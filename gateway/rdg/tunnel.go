package rdg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/internal/netx"
)

// maxPacket bounds a client packet: a data packet of 65535 bytes with
// its headers; the packets before it are far smaller.
const maxPacket = headerLen + 2 + 65535

// maxPreAuthPacket bounds the packets before the channel: a token and a
// host name or two.
const maxPreAuthPacket = 16 << 10

// keepaliveEvery is how often a relaying tunnel sends the client a
// keepalive.
const keepaliveEvery = time.Minute

// relayChunk is how much of the node's stream goes in one data packet.
const relayChunk = 16 << 10

// tunnel is one client's tunnel, over either transport: packets come in
// on in and go out on out; closeTransport ends the transport.
type tunnel struct {
	s      *Server
	client string
	in     io.Reader
	out    io.Writer
	wmu    sync.Mutex // serialises writes to out
	close  func()     // ends the transport
	log    *zap.Logger

	user  string
	lease *balancer.Lease
	nmu   sync.Mutex // protects node: end runs on other goroutines
	node  net.Conn
	last  atomic.Int64 // unix nanos of the last byte either way
	bytes [2]atomic.Int64
	why   atomic.Pointer[string]
}

func (t *tunnel) send(p []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	_, err := t.out.Write(p)
	return err
}

// end records why the tunnel ends (first reason wins) and closes it.
func (t *tunnel) end(reason string) {
	t.why.CompareAndSwap(nil, &reason)
	t.close()
	t.nmu.Lock()
	if t.node != nil {
		t.node.Close()
	}
	t.nmu.Unlock()
}

// refuse tells the client why (in the packet its state expects), logs
// the refusal and ends the tunnel.
func (t *tunnel) refuse(answer []byte, reason string, fields ...zap.Field) {
	_ = t.send(answer)
	t.s.refused(t.log, "rd gateway tunnel refused", append(fields, zap.String("reason", reason))...)
	t.end(reason)
}

// expect reads the next packet, which must be of type want; a keepalive
// before it is skipped.
func (t *tunnel) expect(want uint16, max int) ([]byte, error) {
	for {
		p, err := readPacket(t.in, max)
		if err != nil {
			return nil, err
		}
		if p.typ == pktKeepalive {
			continue
		}
		if p.typ != want {
			return nil, bad("packet of type %#x where %#x was due", p.typ, want)
		}
		return p.body, nil
	}
}

// run speaks the protocol: handshake, tunnel (the token), tunnel
// authorisation, channel (the node), then relays. slot is the client's
// pre-auth slot, given back once the token is good.
func (t *tunnel) run(slot *netx.Slot) {
	s := t.s
	started := time.Now()
	deadline := time.AfterFunc(s.cfg.HandshakeTimeout, func() { t.end("no channel within handshake_timeout") })
	defer func() {
		deadline.Stop()
		if slot != nil {
			slot.Release()
		}
	}()

	body, err := t.expect(pktHandshakeRequest, maxPreAuthPacket)
	if err != nil {
		t.fail("handshake", err)
		return
	}
	hs, err := parseHandshakeRequest(body)
	if err != nil {
		t.fail("handshake", err)
		return
	}
	if hs.extendedAuth&extAuthPAA == 0 {
		t.refuse(handshakeResponse(eProxyCapabilityMismatch, 0), "the client offers no token authentication (PAA): open the .rdp file poolgate gives, or pass /gat:TOKEN")
		return
	}
	if err := t.send(handshakeResponse(statusOK, extAuthPAA)); err != nil {
		t.end("client gone")
		return
	}

	body, err = t.expect(pktTunnelCreate, maxPreAuthPacket)
	if err != nil {
		t.fail("tunnel create", err)
		return
	}
	tc, err := parseTunnelCreate(body)
	if err != nil {
		t.fail("tunnel create", err)
		return
	}
	claims, err := s.signer().Verify(cookieToken(tc.paaCookie))
	if err != nil {
		s.m.Refused(gwmetrics.BadToken)
		fields := []zap.Field{}
		if errors.Is(err, ErrTokenExpired) {
			fields = append(fields, zap.String("claimed_user", claims.User), zap.String("token_id", claims.ID))
		}
		t.refuse(tunnelResponse(eProxyCookieAuthenticationDenied, 0, 0), err.Error(), fields...)
		return
	}
	t.user = claims.User
	t.log = t.log.With(zap.String("user", claims.User), zap.String("token_id", claims.ID))
	slot.Release()
	slot = nil
	if err := t.send(tunnelResponse(statusOK, 1, capIdleTimeout)); err != nil {
		t.end("client gone")
		return
	}

	body, err = t.expect(pktTunnelAuth, maxPreAuthPacket)
	if err != nil {
		t.fail("tunnel authorisation", err)
		return
	}
	if _, err := parseTunnelAuth(body); err != nil {
		t.fail("tunnel authorisation", err)
		return
	}
	idleMinutes := uint32(0)
	if s.cfg.IdleTimeout > 0 {
		idleMinutes = uint32(max(1, s.cfg.IdleTimeout/time.Minute))
	}
	if err := t.send(tunnelAuthResponse(statusOK, redirEnableAll, idleMinutes)); err != nil {
		t.end("client gone")
		return
	}

	body, err = t.expect(pktChannelCreate, maxPreAuthPacket)
	if err != nil {
		t.fail("channel create", err)
		return
	}
	cc, err := parseChannelCreate(body)
	if err != nil {
		t.fail("channel create", err)
		return
	}
	if !t.open(claims, cc) {
		return
	}
	deadline.Stop()
	defer func() {
		if t.lease != nil {
			t.lease.Release()
		}
	}()
	t.log.Info("rd gateway session started", zap.Uint64("session_id", t.lease.ID()), zap.String("target", cc.resources[0]),
		zap.Duration("handshake", time.Since(started).Round(time.Millisecond)))
	t.relay()
	fields := []zap.Field{
		zap.Uint64("session_id", t.lease.ID()),
		zap.Duration("duration", time.Since(started).Round(time.Millisecond)),
		zap.Int64("bytes_to_node", t.bytes[gwmetrics.ToNode].Load()),
		zap.Int64("bytes_to_client", t.bytes[gwmetrics.ToClient].Load()),
	}
	if r := t.why.Load(); r != nil {
		fields = append(fields, zap.String("reason", *r))
	}
	t.log.Info("rd gateway session ended", fields...)
}

// fail ends a tunnel whose client broke the protocol or left.
func (t *tunnel) fail(stage string, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		if r := t.why.Load(); r != nil {
			t.s.refused(t.log, "rd gateway tunnel ended before its channel", zap.String("stage", stage), zap.String("reason", *r))
		} else {
			t.s.refused(t.log, "rd gateway tunnel ended before its channel", zap.String("stage", stage), zap.String("reason", "client left"))
		}
		t.end("client left")
		return
	}
	t.s.refused(t.log, "rd gateway tunnel dropped", zap.String("stage", stage), zap.Error(err))
	t.end(stage + ": " + err.Error())
}

// open routes the channel: to the node the token names, else the user's
// node by the routing rules; the client's target must be the pool's
// target name or that node. It takes the lease and connects, or answers
// the refusal and reports false.
func (t *tunnel) open(c Claims, cc channelCreate) bool {
	s := t.s
	target := hostOnly(cc.resources[0])
	picking := time.Now()
	var node balancer.Node
	by := balancer.ByBalancer
	if c.Node != "" {
		node, by = balancer.Node{Name: c.Node}, balancer.ByUser
	} else {
		n, err := s.bal.Peek(t.user, balancer.RDP)
		if err != nil {
			s.m.Refused(gwmetrics.NoNode)
			t.refuse(channelResponse(eProxyTSConnectFailed, 0), "no node can take the session: "+err.Error())
			return false
		}
		node = n
	}
	if !sameName(target, s.cfg.Target) && !sameName(target, node.Name) && !sameName(target, hostOnly(node.RDP)) {
		s.m.Refused(gwmetrics.TargetRefused)
		t.refuse(channelResponse(eProxyRAPAccessDenied, 0),
			fmt.Sprintf("the client asked for %q; this gateway opens only %q (the user's node, %s)", target, s.cfg.Target, node.Name),
			zap.String("target", cc.resources[0]))
		return false
	}
	l, err := s.bal.AcquireOn(t.user, balancer.RDP, t.client, node.Name, by)
	s.m.Picked(time.Since(picking).Seconds())
	if err != nil {
		s.m.Refused(gwmetrics.NoNode)
		t.refuse(channelResponse(eProxyTSConnectFailed, 0), "the node cannot take the session: "+err.Error())
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
	nc, err := s.dial(ctx, "tcp", l.Node().RDP)
	cancel()
	if err != nil {
		l.Fail()
		s.m.Refused(gwmetrics.NodeUnreachable)
		t.refuse(channelResponse(eProxyTSConnectFailed, 0), "node unreachable: "+err.Error(), zap.String("node", l.Node().Name))
		return false
	}
	t.nmu.Lock()
	if r := t.why.Load(); r != nil {
		// Ended (handshake_timeout, a shutdown) while the node was dialled.
		t.nmu.Unlock()
		nc.Close()
		l.Release()
		return false
	}
	t.node, t.lease = nc, l
	t.nmu.Unlock()
	t.log = t.log.With(zap.String("node", l.Node().Name))
	if err := t.send(channelResponse(statusOK, 1)); err != nil {
		t.end("client gone")
		return true // the lease is released by run
	}
	return true
}

// hostOnly is a resource name without a port.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.Trim(h, "[]")
}

// relay moves the RDP stream until either side ends.
func (t *tunnel) relay() {
	t.last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); t.fromNode() }()
	go func() { defer wg.Done(); t.fromClient() }()
	// Every keepaliveEvery the client is sent a keepalive, which it
	// echoes: a tunnel at an idle desktop keeps the connection alive
	// through load balancers that drop idle flows (Azure's after 4
	// minutes), and a client gone without a word is found.
	stop := make(chan struct{})
	go func() {
		idle := t.s.cfg.IdleTimeout
		every := keepaliveEvery
		if idle > 0 {
			every = max(min(every, idle/4), 10*time.Millisecond)
		}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if idle > 0 && time.Since(time.Unix(0, t.last.Load())) >= idle {
					t.end("idle_timeout")
					return
				}
				if err := t.send(keepalive()); err != nil {
					t.end("client gone")
					return
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
}

func (t *tunnel) moved(dir, n int) {
	t.bytes[dir].Add(int64(n))
	t.s.m.Relayed(dir, n)
	t.last.Store(time.Now().UnixNano())
}

// fromNode wraps the node's stream in data packets.
func (t *tunnel) fromNode() {
	buf := make([]byte, relayChunk)
	for {
		n, err := t.node.Read(buf)
		if n > 0 {
			if werr := t.send(dataPacket(buf[:n])); werr != nil {
				t.end("client closed")
				return
			}
			t.moved(gwmetrics.ToClient, n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = t.send(closeChannel(statusOK))
				t.end("node closed")
			} else {
				t.end("node failed: " + err.Error())
			}
			return
		}
	}
}

// fromClient unwraps the client's data packets onto the node.
func (t *tunnel) fromClient() {
	for {
		p, err := readPacket(t.in, maxPacket)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
				t.end("client closed")
			} else {
				t.end("client sent " + err.Error())
			}
			return
		}
		switch p.typ {
		case pktData:
			d, err := parseData(p.body)
			if err != nil {
				t.end("client sent " + err.Error())
				return
			}
			if _, err := t.node.Write(d); err != nil {
				t.end("node closed")
				return
			}
			t.moved(gwmetrics.ToNode, len(d))
		case pktKeepalive:
			// The client's echo of ours: it is there, which is not
			// activity for idle_timeout.
		case pktCloseChannel:
			status, _ := parseCloseChannel(p.body)
			_ = t.send(closeChannelResponse(statusOK))
			t.end(fmt.Sprintf("client closed the channel (status %#x)", status))
			return
		default:
			// Service and reauthentication messages flow from the
			// gateway only; anything else is ignored, as the client
			// ignores what it does not know.
		}
	}
}
