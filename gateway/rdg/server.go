package rdg

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/internal/netx"
	"github.com/poolgate/poolgate/internal/ratelog"
)

// Path is where RD Gateway clients send their requests (MS-TSGU's HTTP
// transport); the HTTP front end hands every request under it to the
// Server.
const Path = "/remoteDesktopGateway/"

// The transport's methods: the client's OUT channel (gateway to client;
// a WebSocket when the client asks to upgrade it) and its IN channel.
const (
	methodOut = "RDG_OUT_DATA"
	methodIn  = "RDG_IN_DATA"
)

// Balancer is what the RD Gateway needs from the balancer.
type Balancer interface {
	// Peek names the user's node by the routing rules, taking nothing.
	Peek(user string, proto balancer.Protocol, avoid ...string) (balancer.Node, error)
	// AcquireOn takes the session's lease on the node.
	AcquireOn(user string, proto balancer.Protocol, client, node string, by balancer.PinOrigin) (*balancer.Lease, error)
}

// Options are the server's collaborators besides its config.
type Options struct {
	Logger *zap.Logger
	// Dial connects to a node; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Metrics records refusals, relayed bytes and the time to choose a
	// node (the rdp front end's families); nil records nothing.
	Metrics *gwmetrics.Front
}

// Server is the RD Gateway: an http.Handler for Path.
type Server struct {
	cfg  Config
	bal  Balancer
	key  atomic.Pointer[Signer]
	log  *zap.Logger
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	m    *gwmetrics.Front

	pending  *netx.Slots // tunnels not yet past their token
	refusals ratelog.Limiter

	mu      sync.Mutex
	legacy  map[string]*legacyTunnel // by RDG-Connection-Id, awaiting their IN channel
	open    map[*tunnel]struct{}
	closed  bool
	running sync.WaitGroup
}

// New returns the RD Gateway; cfg's zero fields take their defaults.
// signer signs and verifies the tokens.
func New(cfg Config, bal Balancer, signer *Signer, opts Options) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if bal == nil || signer == nil || len(signer.Key) < MinKeyLen {
		return nil, errors.New("rdg: a balancer and a token key of at least 32 bytes are needed")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	s := &Server{
		cfg: cfg, bal: bal, log: log, dial: dial, m: opts.Metrics,
		pending:  &netx.Slots{Max: cfg.MaxPending, PerAddress: cfg.MaxPendingPerAddress},
		refusals: ratelog.Limiter{Every: time.Second},
		legacy:   map[string]*legacyTunnel{},
		open:     map[*tunnel]struct{}{},
	}
	s.key.Store(signer)
	return s, nil
}

func (s *Server) signer() *Signer { return s.key.Load() }

// Config is the server's configuration, defaults filled.
func (s *Server) Config() Config { return s.cfg }

// Issue signs a token for user (and node, when not "") for the
// configured token_ttl.
func (s *Server) Issue(user, node string) (string, Claims, error) {
	return s.signer().Issue(user, node, s.cfg.TokenTTL)
}

// refused logs a refusal, at most one a second with a count of those
// held back: anyone can ask to be refused.
func (s *Server) refused(log *zap.Logger, msg string, fields ...zap.Field) {
	s.refusals.Info(log, msg, fields...)
}

// ServeHTTP takes one transport request: RDG_OUT_DATA, upgraded to a
// WebSocket or opening a legacy OUT channel, or RDG_IN_DATA, the legacy
// IN channel of an OUT channel already open.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	client := r.RemoteAddr
	switch {
	case r.Method != methodOut && r.Method != methodIn:
		w.Header().Set("Allow", methodOut+", "+methodIn)
		http.Error(w, "poolgate: this is an RD Gateway; open it with a Remote Desktop client and the .rdp file poolgate gives", http.StatusMethodNotAllowed)
		return
	case r.Method == methodIn:
		s.serveIn(w, r)
		return
	}
	slot, err := s.pending.Take(netx.AddrKey(addrOf(client)))
	if err != nil {
		s.m.Refused(gwmetrics.TooManyUnauthentic)
		s.refused(s.log, "rd gateway request refused", zap.String("client", client), zap.String("reason", err.Error()))
		http.Error(w, "poolgate: too many connections waiting to sign in from your address; try again in a moment", http.StatusServiceUnavailable)
		return
	}
	log := s.log.With(zap.String("client", client))
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	if headerHas(r.Header, "Upgrade", "websocket") {
		s.serveWebSocket(w, r, slot, log)
		return
	}
	s.serveLegacyOut(w, r, slot, log)
}

// serveWebSocket runs a tunnel over one WebSocket. MS-TSGU's client asks
// with method RDG_OUT_DATA, which a WebSocket handshake otherwise has as
// GET; the rest of it is RFC 6455's.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, slot *netx.Slot, log *zap.Logger) {
	key := strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))
	if key == "" || len(key) > 64 || len(r.Header.Values("Sec-WebSocket-Key")) != 1 {
		slot.Release()
		http.Error(w, "poolgate: a WebSocket upgrade needs one Sec-WebSocket-Key", http.StatusBadRequest)
		return
	}
	// FreeRDP 2.x sends a key of 15 characters that is not the base64 of
	// 16 bytes RFC 6455 asks for, which the WebSocket library refuses: it
	// is given a placeholder, and the answer carries the accept value of
	// the key the client sent, which is what the client checks.
	r.Header.Set("Sec-WebSocket-Key", "cG9vbGdhdGUtcmRnLWtleQ==")
	r.Method = http.MethodGet
	c, err := websocket.Accept(acceptFor{w, key}, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		slot.Release()
		s.refused(log, "rd gateway websocket handshake failed", zap.Error(err))
		return
	}
	c.SetReadLimit(maxPacket + 1024)
	ctx, cancel := context.WithCancel(context.Background())
	nc := websocket.NetConn(ctx, c, websocket.MessageBinary)
	t := &tunnel{s: s, client: r.RemoteAddr, in: nc, out: nc, log: log.With(zap.String("transport", "websocket"))}
	// No closing handshake: FreeRDP answers a close frame with a pong.
	t.close = func() { cancel(); _ = c.CloseNow() }
	s.runTunnel(t, slot)
}

// acceptFor answers a WebSocket upgrade with the accept value of key.
type acceptFor struct {
	http.ResponseWriter
	key string
}

func (a acceptFor) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols {
		a.Header().Set("Sec-WebSocket-Accept", wsAccept(a.key))
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a acceptFor) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(a.ResponseWriter).Hijack()
}

// wsAccept is RFC 6455's Sec-WebSocket-Accept for key as sent.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// runTunnel runs t to its end, tracked so Close can end it.
func (s *Server) runTunnel(t *tunnel, slot *netx.Slot) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		slot.Release()
		t.close()
		return
	}
	s.open[t] = struct{}{}
	s.running.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.open, t)
		s.mu.Unlock()
		s.running.Done()
	}()
	t.run(slot)
	t.end("done")
}

// Open counts the tunnels open (for ops and tests).
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// Pending counts the tunnels not yet past their token.
func (s *Server) Pending() int { return s.pending.InUse() }

// Close ends every tunnel and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for t := range s.open {
		go t.end("gateway shutting down")
	}
	for id, l := range s.legacy {
		l.abandon()
		delete(s.legacy, id)
	}
	s.mu.Unlock()
	s.running.Wait()
	return nil
}

// Drain waits until every tunnel has ended or ctx ends.
func (s *Server) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// legacyTunnel is an OUT channel waiting for its IN channel.
type legacyTunnel struct {
	out   net.Conn
	slot  *netx.Slot
	log   *zap.Logger
	gone  chan struct{} // closed when the client's OUT connection ends
	timer *time.Timer
}

func (l *legacyTunnel) abandon() {
	l.timer.Stop()
	l.out.Close()
	l.slot.Release()
}

// seedLen is the "seed" the gateway sends after its answer to the OUT
// request ([MS-TSGU] 3.3.5.1): clients read and drop 10 bytes.
const seedLen = 10

// serveLegacyOut opens the OUT channel of the legacy transport: the
// gateway answers 200 and a seed, then writes packets on the connection
// as they come; the client's packets come on the IN channel, a second
// request with the same RDG-Connection-Id.
func (s *Server) serveLegacyOut(w http.ResponseWriter, r *http.Request, slot *netx.Slot, log *zap.Logger) {
	id := r.Header.Get("RDG-Connection-Id")
	if id == "" || len(id) > 128 {
		slot.Release()
		http.Error(w, "poolgate: an RD Gateway request without a valid RDG-Connection-Id", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		slot.Release()
		http.Error(w, "poolgate: this connection cannot carry an RD Gateway tunnel", http.StatusInternalServerError)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	if brw.Reader.Buffered() > 0 {
		// The OUT channel carries nothing from the client.
		slot.Release()
		conn.Close()
		return
	}
	// Registered before the answer goes out: the client sends its IN
	// request as soon as it has read the seed.
	l := &legacyTunnel{out: conn, slot: slot, log: log.With(zap.String("transport", "http")), gone: make(chan struct{})}
	s.mu.Lock()
	if s.closed || s.legacy[id] != nil {
		s.mu.Unlock()
		slot.Release()
		conn.Close()
		return
	}
	s.legacy[id] = l
	forget := func() {
		s.mu.Lock()
		if s.legacy[id] == l {
			delete(s.legacy, id)
			l.abandon()
		}
		s.mu.Unlock()
	}
	l.timer = time.AfterFunc(s.cfg.HandshakeTimeout, forget)
	s.mu.Unlock()
	seed := make([]byte, seedLen)
	_, _ = rand.Read(seed)
	if _, err := conn.Write(append([]byte("HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\n\r\n"), seed...)); err != nil {
		forget()
		return
	}
	// The client sends nothing on its OUT channel: a read that returns
	// means it left (or broke the protocol), before or after its IN
	// channel came.
	go func() {
		_, _ = conn.Read(make([]byte, 1))
		close(l.gone)
		forget()
	}()
	// The tunnel runs in serveIn, on the IN channel's handler; this
	// handler's connection is hijacked, so it returns.
}

// serveIn takes the IN channel of a legacy tunnel: the client's first
// request (no body) is answered 200, then it sends the request again with
// a chunked body that carries its packets for as long as the tunnel lives.
func (s *Server) serveIn(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("RDG-Connection-Id")
	s.mu.Lock()
	l := s.legacy[id]
	if l != nil {
		delete(s.legacy, id)
		l.timer.Stop()
	}
	s.mu.Unlock()
	if l == nil {
		http.Error(w, "poolgate: no RD Gateway OUT channel waits for this IN channel (RDG-Connection-Id); connect again", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		l.abandon()
		http.Error(w, "poolgate: this connection cannot carry an RD Gateway tunnel", http.StatusInternalServerError)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	t := &tunnel{s: s, client: r.RemoteAddr, out: l.out, log: l.log}
	t.close = func() { conn.Close(); l.out.Close() }
	if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n"); err != nil {
		l.slot.Release()
		t.close()
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	req, err := http.ReadRequest(bufio.NewReaderSize(brw.Reader, 4096))
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil || req.Method != methodIn || !chunked(req) {
		l.slot.Release()
		t.close()
		what := "no second RDG_IN_DATA request with a chunked body"
		if err != nil {
			what = err.Error()
		}
		s.refused(l.log, "rd gateway IN channel dropped", zap.String("reason", what))
		return
	}
	t.in = req.Body
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-l.gone:
			t.end("client closed its OUT channel")
		case <-done:
		}
	}()
	s.runTunnel(t, l.slot)
}

func chunked(r *http.Request) bool {
	for _, te := range r.TransferEncoding {
		if strings.EqualFold(te, "chunked") {
			return true
		}
	}
	return false
}

// headerHas reports whether header key lists token (comma separated,
// any case).
func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// addrOf parses a RemoteAddr for the pre-auth caps.
func addrOf(remote string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", remote)
	if err != nil {
		return &net.TCPAddr{}
	}
	return a
}
