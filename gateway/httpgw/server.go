package httpgw

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
)

// Options are the server's collaborators beyond its config.
type Options struct {
	// StateDir holds the affinity cookie key, learned hub certificate
	// fingerprints and the self-signed certificate.
	StateDir string
	Logger   *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CertCheckInterval is how often cert_file and key_file are checked
	// for changes. Default 5s.
	CertCheckInterval time.Duration
	// Starter, when set, starts a node for a browser that finds none
	// (scale from zero); the browser gets a page that says so and reloads
	// until the node is up. Nil: the plain 503 page.
	Starter Starter
	// Users turns on the users' page under PagePrefix (userpage.go). Nil,
	// or a nil SignIn: those paths answer 404. Either way they never
	// reach a hub.
	Users *UserPage
	// RDGateway, when set, takes every request under RDGatewayPath (the
	// RD Gateway, gateway/rdg) before any routing: it never reaches a hub.
	RDGateway RDGateway
	// Metrics, if set, records the HTTP front end's part of the shared
	// families (gateway/gwmetrics): answers by status code, the time to
	// choose a node, bytes relayed to and from hubs (bodies and
	// WebSocket traffic) and requests no node could take. Nil records
	// nothing.
	Metrics *gwmetrics.Front
}

// RDGatewayPath is the RD Gateway's path (MS-TSGU clients ask for it
// under this name).
const RDGatewayPath = "/remoteDesktopGateway/"

// RDGateway is the RD Gateway as the HTTP front end serves it. Its
// tunnels live on hijacked connections, which Shutdown leaves to their
// owner (a desktop outlives a browser request: the app waits for them as
// for RDP sessions) and Close closes.
type RDGateway interface {
	http.Handler
	Close() error
}

// Balancer is what the HTTP gateway needs from the balancer.
type Balancer interface {
	// Acquire takes a lease on the user's node for a new session.
	Acquire(user string, proto balancer.Protocol, client string, avoid ...string) (*balancer.Lease, error)
	// Usable reports whether the named node can still serve proto.
	Usable(name string, proto balancer.Protocol) bool
	// Route names the node for a request that belongs to no user yet.
	Route(proto balancer.Protocol, prefer string) (balancer.Node, error)
	// Pinned names the node the user is pinned to, if any, without
	// taking anything, from local state only: requests that have not
	// proven their user are routed with it.
	Pinned(user string, proto balancer.Protocol) (balancer.Node, bool)
	// NodeNames lists the node set's names, from local state.
	NodeNames() []string
	// NodeFailed reports that the node's hub took no connection.
	NodeFailed(node string, proto balancer.Protocol)
	// HubNode names the node whose hub listens on addr, "" for none, for
	// the certificate fingerprint check on every new connection to a
	// hub. It must answer from local state: a call to shared state here
	// would sit on the dial path.
	HubNode(addr string) string

	// For the users' page:

	// Nodes returns a snapshot of the node set with load and sessions.
	Nodes() []balancer.NodeStatus
	// Sessions returns a snapshot of the live sessions.
	Sessions() []balancer.SessionInfo
	// Choosable lists the nodes the user may choose for proto now.
	Choosable(user string, proto balancer.Protocol) []balancer.Node
	// Choose moves the user's pin to node as the user's own choice,
	// refusing a node not in Choosable.
	Choose(user, node string, proto balancer.Protocol) error
}

// Starter brings up a node when the pool has none (scale from zero).
type Starter interface {
	// StartNode is called when no node can take a session. It reports
	// until when the user may wait for a node that is starting, or false
	// when none is coming.
	StartNode() (until time.Time, ok bool)
}

// Server is the HTTP gateway. Create it with New, run it with Serve, stop
// it with Shutdown or Close.
type Server struct {
	cfg       Config
	stateDir  string
	bal       Balancer
	starter   Starter // nil: no scale from zero
	rdg       RDGateway
	log       *zap.Logger
	now       func() time.Time
	sign      signer
	cookies   *cookieCache
	track     *tracker
	proxy     *httputil.ReverseProxy
	transport *hubTransport
	scheme    string // upstream
	certs     *certSource
	tlsConfig *tls.Config
	certEvery time.Duration
	srv       *http.Server
	hsts      string           // Strict-Transport-Security value; "" sends none
	page      *userPage        // nil: the users' page is off
	metrics   *gwmetrics.Front // nil: none
	// private are the gateway's own cookies, taken out of requests
	// before they reach a hub.
	private []string

	base     context.Context // parent of every request; cancelled by Close
	cancel   context.CancelFunc
	handlers sync.WaitGroup // ServeHTTP calls in flight, WebSockets included
	bgOnce   sync.Once
	bg       sync.WaitGroup
}

// New builds the HTTP gateway from a validated, defaulted config.
func New(cfg Config, bal Balancer, opts Options) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, stateDir: opts.StateDir, bal: bal, starter: opts.Starter, log: opts.Logger, now: opts.Now, certEvery: opts.CertCheckInterval, metrics: opts.Metrics}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.certEvery == 0 {
		s.certEvery = 5 * time.Second
	}
	key, err := loadAffinityKey(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	s.sign = newSigner(key)
	s.rdg = opts.RDGateway
	s.page, err = newUserPage(opts.Users, bal, s.log)
	if err != nil {
		return nil, err
	}
	s.private = []string{AdminCookie}
	if s.page != nil {
		s.private = append(s.private, s.page.cookieNames()...)
	}
	s.cookies = newCookieCache(s.sign, *cfg.TLS)
	s.track = newTracker(bal, cfg.SessionIdle, s.now)
	if len(cfg.UpstreamPins) > 0 {
		s.log.Warn("http.upstream_pins is the old name of http.upstream_fingerprints; it still works, but rename it")
	}
	s.transport, err = newTransport(cfg, opts.StateDir, bal.HubNode, s.log)
	if err != nil {
		return nil, err
	}
	s.scheme = "http"
	if *cfg.UpstreamTLS {
		s.scheme = "https"
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      s.transport,
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.proxyError,
		ErrorLog:       mustStdLog(s.log, zap.WarnLevel),
		BufferPool:     bufferPool{},
	}
	if *cfg.TLS {
		if err := s.setupTLS(opts.StateDir); err != nil {
			return nil, err
		}
		if age := *cfg.HSTSMaxAge; age > 0 {
			s.hsts = "max-age=" + strconv.FormatInt(int64(age/time.Second), 10)
		}
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		// TLS handshake failures from scanners are noise at info level.
		ErrorLog: mustStdLog(s.log, zap.DebugLevel),
	}
	return s, nil
}

func (s *Server) setupTLS(stateDir string) error {
	certFile, keyFile := s.cfg.CertFile, s.cfg.KeyFile
	if certFile == "" {
		host, _, _ := net.SplitHostPort(s.cfg.Listen)
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if hn, err := os.Hostname(); err == nil {
			hosts = append(hosts, hn)
		}
		if ip := net.ParseIP(host); (ip != nil && !ip.IsUnspecified()) || (ip == nil && host != "") {
			hosts = append(hosts, host)
		}
		var created bool
		var err error
		certFile, keyFile, created, err = selfSigned(stateDir, hosts)
		if err != nil {
			return fmt.Errorf("state_dir: creating a self-signed certificate: %w", err)
		}
		verb := "using"
		if created {
			verb = "created"
		}
		s.log.Warn("http.cert_file is not set: "+verb+" a self-signed certificate; browsers will warn until http.cert_file and http.key_file name a real one",
			zap.String("cert_file", certFile))
	}
	s.certs = &certSource{certFile: certFile, keyFile: keyFile, log: s.log}
	if err := s.certs.reload(); err != nil {
		return err
	}
	s.tlsConfig = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certs.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		// TLS 1.2 with forward secrecy and AEAD only: no CBC (LUCKY13),
		// no RSA key exchange. TLS 1.3's suites are all AEAD and fixed.
		CipherSuites: aeadSuites,
	}
	return nil
}

// Reload loads cert_file and key_file again (SIGHUP). Without TLS it does
// nothing.
func (s *Server) Reload() error {
	if s.certs == nil {
		return nil
	}
	return s.certs.reload()
}

// ReloadFingerprints reads the hubs' certificate fingerprints again: the
// file learnt on first contact and cfg's upstream_fingerprints (a
// reload). It returns the nodes forgotten; on an error nothing changes.
func (s *Server) ReloadFingerprints(cfg Config) (forgotten []string, err error) {
	if s.transport == nil || s.transport.fps == nil {
		return nil, nil
	}
	configured, key := cfg.fingerprints()
	return s.transport.fps.reload(configured, key)
}

// HealthClient is an HTTP client with the same upstream TLS policy as the
// proxy, and HealthScheme its scheme, for the hub health checks.
func (s *Server) HealthClient() *http.Client { return &http.Client{Transport: s.transport} }

// HealthScheme is "https" when the hubs speak TLS, else "http".
func (s *Server) HealthScheme() string { return s.scheme }

// Serve accepts browsers on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	s.bgOnce.Do(func() {
		every := min(max(s.cfg.SessionIdle/4, 10*time.Millisecond), 30*time.Second)
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-s.base.Done():
					return
				case <-t.C:
					s.track.sweep()
				}
			}
		}()
		if s.certs != nil && s.cfg.CertFile != "" {
			s.bg.Add(1)
			go func() { defer s.bg.Done(); s.certs.watch(s.base, s.certEvery) }()
		}
	})
	if s.tlsConfig != nil {
		ln = newSniffListener(ln, s.tlsConfig, s.cfg.ReadHeaderTimeout, s.log)
	}
	s.log.Info("HTTP gateway listening", zap.String("addr", ln.Addr().String()), zap.Bool("tls", s.tlsConfig != nil), zap.String("upstream", s.scheme))
	return s.srv.Serve(ln)
}

// Shutdown stops accepting, waits for plain requests to finish and then
// ends WebSockets and event streams (browsers reconnect to the next
// gateway), or gives up when ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.cancel() // hijacked connections are not waited for by http.Server
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	s.finish()
	return err
}

// Close stops at once.
func (s *Server) Close() error {
	err := s.srv.Close()
	if s.rdg != nil {
		_ = s.rdg.Close()
	}
	s.cancel()
	s.handlers.Wait()
	s.finish()
	return err
}

func (s *Server) finish() {
	s.bg.Wait()
	s.track.closeAll()
	s.transport.CloseIdleConnections()
}

// ctxKey carries a request's routing state to Rewrite and ModifyResponse.
type ctxKey struct{}

type reqState struct {
	user      string
	pathUser  bool // user came from the /user/<name>/ path
	node      balancer.Node
	aff       affinity
	affOK     bool
	login     bool // POST /hub/login naming user
	logout    bool
	status    int
	confirmed bool     // the node's answer proved user (proof.go)
	sess      *session // the proven session this request counts in
	client    string
}

func isLoginPath(p string) bool  { return p == "/hub/login" }
func isLogoutPath(p string) bool { return p == "/hub/logout" }

// ServeHTTP routes one request: who it belongs to, which node, then the
// reverse proxy.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.rdg != nil && strings.HasPrefix(r.URL.Path, RDGatewayPath) {
		// Its own protocol on hijacked connections: no affinity, no hub.
		s.rdg.ServeHTTP(w, r)
		return
	}
	s.handlers.Add(1)
	defer s.handlers.Done()
	start := s.now()
	st := &reqState{client: r.RemoteAddr}
	cw := &countingWriter{ResponseWriter: w, m: s.metrics}
	w = cw
	defer func() { s.answered(cw, st); s.accessLog(r, st, start) }()
	if s.hsts != "" {
		w.Header().Set("Strict-Transport-Security", s.hsts)
	}
	if isPagePath(r.URL.Path) {
		// The gateway's own page, before any routing: no affinity, no hub.
		s.servePage(w, r, st)
		return
	}

	user, err := userFromPath(r.URL.EscapedPath())
	if err != nil {
		st.status = http.StatusBadRequest
		writePage(w, page{Status: st.status, Title: "Bad request", Message: "The address names a user whose name is not a valid user name on this pool (ASCII letters, digits and _ . @ - only)."})
		return
	}
	st.pathUser = user != ""
	cookieUser, affRaw := scanCookies(r.Header["Cookie"], AffinityCookie)
	if affRaw != "" {
		st.aff, err = s.cookies.decode(affRaw, start)
		st.affOK = err == nil
	}
	if user == "" {
		user = cookieUser
	}
	if r.Method == http.MethodPost && isLoginPath(r.URL.Path) {
		formUser, ok := s.readLoginForm(w, r, st)
		if !ok {
			return
		}
		if formUser != "" {
			// The hub logs in whom the form names.
			user, st.login = formUser, true
		}
	}
	if user == "" && st.affOK && st.aff.User != "" {
		user = st.aff.User
	}
	st.logout = isLogoutPath(r.URL.Path)
	st.user = user
	defer func() {
		if st.sess != nil {
			s.track.end(st.sess)
		}
	}()

	// Route by what the request names, taking nothing: a lease or pin
	// comes only once the node's answer proves the user (modifyResponse).
	var node balancer.Node
	ok := false
	picking := time.Now()
	if user != "" {
		if node, ok = s.track.nodeOf(user); !ok {
			node, ok = s.bal.Pinned(user, balancer.HTTP)
		}
	}
	if !ok {
		prefer := ""
		if st.affOK {
			prefer = st.aff.Node
		}
		node, err = s.bal.Route(balancer.HTTP, prefer)
		if err != nil {
			s.metrics.Picked(time.Since(picking).Seconds())
			s.metrics.Refused(gwmetrics.NoNode)
			// Only a browser the gateway saw proven (its signed cookie
			// names a user) may wake a node: scanners must not.
			s.unavailable(w, st, "", st.affOK && st.aff.User != "")
			return
		}
	}
	s.metrics.Picked(time.Since(picking).Seconds())
	st.node = node
	s.stripPrivateCookies(r)
	cw.relay = true
	if s.metrics != nil && r.Body != nil && r.Body != http.NoBody {
		r.Body = countingBody{r.Body, s.metrics}
	}
	s.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
}

// readLoginForm reads a POST /hub/login body (up to max_login_form) to
// learn the user name and puts it back unchanged for the hub. It answers
// 413 itself for a larger body and returns false.
func (s *Server) readLoginForm(w http.ResponseWriter, r *http.Request, st *reqState) (string, bool) {
	limit := int64(s.cfg.MaxLoginForm)
	if r.ContentLength > limit {
		st.status = http.StatusRequestEntityTooLarge
		writePage(w, page{Status: st.status, Title: "Login form too large", Message: fmt.Sprintf("The login form sent is larger than %d bytes.", limit)})
		return "", false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		st.status = http.StatusBadRequest
		writePage(w, page{Status: st.status, Title: "Bad request", Message: "The login form could not be read."})
		return "", false
	}
	if int64(len(body)) > limit {
		st.status = http.StatusRequestEntityTooLarge
		writePage(w, page{Status: st.status, Title: "Login form too large", Message: fmt.Sprintf("The login form sent is larger than %d bytes.", limit)})
		return "", false
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return "", true
	}
	// A name the hub would refuse routes like an anonymous request: the
	// hub itself answers the failed login.
	user, _ := userFromLoginForm(body)
	return user, true
}

func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(ctxKey{}).(*reqState)
	pr.Out.URL.Scheme = s.scheme
	pr.Out.URL.Host = st.node.HTTP
	pr.Out.Host = pr.In.Host // jupyter_server checks Origin against Host
	pr.SetXForwarded()
}

// modifyResponse learns from the hub's answer whether the user is logged
// in, and sets the affinity cookie when it is missing, names another node
// or user, or is old.
func (s *Server) modifyResponse(resp *http.Response) error {
	st := resp.Request.Context().Value(ctxKey{}).(*reqState)
	st.status = resp.StatusCode
	resp.Header.Del("Server")                    // the hub's software and version are its own business
	resp.Header.Del("Strict-Transport-Security") // the gateway's own is set in ServeHTTP
	switch {
	case st.user == "":
	case st.login:
		st.confirmed = loginProven(resp)
	case st.pathUser:
		st.confirmed = serverProven(resp.StatusCode, restOfUserPath(resp.Request.URL.EscapedPath()))
	}
	if st.confirmed {
		sess, err := s.track.confirm(st.user, st.node, st.client)
		if err != nil {
			s.log.Warn("could not count a proven user's session", zap.String("user", st.user), zap.String("node", st.node.Name), zap.Error(err))
		} else {
			st.sess = sess
		}
	}

	cookieUser := ""
	if st.affOK {
		cookieUser = st.aff.User
	}
	switch {
	case st.logout:
		cookieUser = ""
	case st.confirmed && (st.login || cookieUser == ""):
		cookieUser = st.user
	case st.user != "" && cookieUser != "" && cookieUser != st.user:
		// A request for another user's server: the browser's own login
		// stays where it is; leave its cookie alone.
		return nil
	}
	now := s.now()
	if st.affOK && st.aff.Node == st.node.Name && st.aff.User == cookieUser && st.aff.Expires.Sub(now) > affinityTTL/2 {
		return nil
	}
	resp.Header.Add("Set-Cookie", s.cookies.header(st.node.Name, cookieUser, now))
	return nil
}

// proxyError answers when the node's hub could not be reached: the 503
// page, never a bare 502. A hub that takes no connection is gone: the
// user's next request goes to another node.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st := r.Context().Value(ctxKey{}).(*reqState)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		st.status = 499 // the browser went away; nobody reads an answer
		return
	}
	s.log.Warn("hub did not answer", zap.String("node", st.node.Name), zap.String("user", st.user), zap.Error(err))
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
		// Not even a connection: the hub is gone, and its users move on
		// their next request (a slow hub that answered late is not).
		s.bal.NodeFailed(st.node.Name, balancer.HTTP)
	}
	s.metrics.Refused(gwmetrics.NodeUnreachable)
	if cw, ok := w.(*countingWriter); ok {
		cw.relay = false // the gateway's own page
	}
	s.unavailable(w, st, st.node.Name, false)
}

// unavailable answers 503; mayStart lets a browser whose user the
// gateway has seen proven start a node (scale from zero).
func (s *Server) unavailable(w http.ResponseWriter, st *reqState, node string, mayStart bool) {
	st.status = http.StatusServiceUnavailable
	p := page{Status: st.status, Retry: 10, Title: "No node available",
		Message: "No node in the pool can take your session right now. Nodes may be starting or under maintenance."}
	switch {
	case node != "":
		p.Title = "Your node is not responding"
		p.Message = "The node running your JupyterHub (" + node + ") is not answering. If it stays down, you will be moved to another node."
	case s.starter != nil && mayStart:
		if _, ok := s.starter.StartNode(); ok {
			p.Title = "Starting a node for you"
			p.Message = "No node in the pool is running, so one is being started for you. This usually takes 2 to 5 minutes; keep this page open and JupyterHub will open when the node is ready."
		}
	}
	writePage(w, p)
}

func (s *Server) accessLog(r *http.Request, st *reqState, start time.Time) {
	if !*s.cfg.AccessLog {
		return
	}
	// The path only, escaped as received (so /user/a%2f..%2fb/ is not
	// shown as /user/a/../b/): queries can carry tokens (?token=…).
	// Cookies and form fields are never logged.
	s.log.Info("http request",
		zap.String("user", st.user), zap.String("node", st.node.Name), zap.String("client", r.RemoteAddr),
		zap.String("method", r.Method), zap.String("path", receivedPath(r)),
		zap.Int("status", st.status), zap.Duration("duration", s.now().Sub(start)))
}

// bufferPool lends the proxy 32 KiB copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// mustStdLog adapts the logger for net/http's error log at level.
func mustStdLog(l *zap.Logger, level zapcore.Level) *log.Logger {
	std, err := zap.NewStdLogAt(l, level)
	if err != nil {
		return zap.NewStdLog(l)
	}
	return std
}
