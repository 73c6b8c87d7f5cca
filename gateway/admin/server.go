package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/identity"
)

// Pool is what the admin API reads and changes.
type Pool interface {
	Nodes() []balancer.NodeStatus
	Sessions() []balancer.SessionInfo
	Drain(name string) error
	Undrain(name string) error
	// SharedStatus reports whether the routing state is shared with other
	// gateways, whether that shared state is unreachable (degraded), and
	// this gateway's replica name.
	SharedStatus() (shared, degraded bool, replica string)
	// LoadHistory returns a node's recent load samples, oldest first.
	LoadHistory(name string) []balancer.Load
	// Pin moves a user's pin to a node (ops' choice), Unpin drops it,
	// Pins lists the pins with who chose each.
	Pin(user, node string) error
	Unpin(user string) error
	Pins() []balancer.PinInfo
}

// stateOf reports where pool's routing state lives.
func stateOf(pool Pool) StateJSON {
	if shared, degraded, replica := pool.SharedStatus(); shared {
		return StateJSON{Backend: "redis", Degraded: degraded, Replica: replica}
	}
	return StateJSON{Backend: "memory"}
}

// Discovery reports discovery's state; nil means a static node list.
type Discovery func() DiscoveryJSON

// Scaler deletes idle instances (POST /api/scale-in). The result is
// returned to the caller.
type Scaler interface {
	ScaleIn(ctx context.Context, idle time.Duration, keep int, dryRun bool) (ScaleInJSON, error)
}

// Options are the admin API's collaborators beyond its config and pool.
// The zero value serves a static pool without scale-in or metrics.
type Options struct {
	// Logger is the API's logger; nil means no logging.
	Logger *zap.Logger
	// Discovery reports discovery's state in GET /api/nodes; nil means a
	// static node list.
	Discovery Discovery
	// Scaler serves POST /api/scale-in; nil answers 501 (a static list
	// has nothing to delete).
	Scaler Scaler
	// Metrics is served at GET /metrics in the Prometheus text format,
	// behind the same read access as the API; nil answers 404.
	Metrics prometheus.Gatherer
	// SignIn, if set, is the browser sign-in with the identity provider:
	// it replaces the dashboard's token form, and members of
	// identity.ops_groups get the page (with write access). Tokens still
	// open the API.
	SignIn *identity.Web
	// Identities serves GET /api/identities and DELETE
	// /api/identities/{user}; nil answers 501 (no identity provider).
	Identities Identities
	// RDPFiles serves POST /api/users/{user}/rdp-file; nil answers 501
	// (the RD Gateway is off).
	RDPFiles RDPFiles
	// Recordings serves GET /api/recordings and GET
	// /api/recordings/{id} (ops only); nil answers 501.
	Recordings Recordings
}

// Server is the admin API. Create it with New and serve Handler.
type Server struct {
	pool      Pool
	discovery Discovery     // nil: static list
	scaler    Scaler        // nil: no scale-in
	ids       Identities    // nil: no identity provider
	rdpFiles  RDPFiles      // nil: no RD Gateway
	recs      Recordings    // nil: no recording
	web       *identity.Web // nil: the token form
	log       *zap.Logger
	tok       atomic.Pointer[tokens] // replaced whole by SetConfig
	startedAt time.Time
	metrics   http.Handler // nil: no /metrics
	sess      sessions     // the dashboard's sign-in cookie
	cfg       Config       // as started
	// listenHost, metricsHost and hosts are the names the API and the
	// metrics listener answer for (guard.go).
	listenHost  string
	metricsHost string
	hosts       []string
	// The metrics listener's certificate (nil: plain HTTP),
	// metricslisten.go; its token is in tok.
	metricsCert *certFiles
}

// New reads the token files and returns the API.
func New(cfg Config, pool Pool, opts Options) (*Server, error) {
	s := &Server{pool: pool, discovery: opts.Discovery, scaler: opts.Scaler, ids: opts.Identities, rdpFiles: opts.RDPFiles, recs: opts.Recordings, web: opts.SignIn, log: opts.Logger, startedAt: time.Now(), sess: newSessions(time.Now)}
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil {
		s.listenHost = strings.ToLower(host)
	}
	if host, _, err := net.SplitHostPort(cfg.MetricsListen); err == nil {
		s.metricsHost = strings.ToLower(host)
	}
	for _, h := range cfg.Hosts {
		s.hosts = append(s.hosts, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if opts.Metrics != nil {
		s.metrics = promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{})
	}
	t, err := readTokens(cfg)
	if err != nil {
		return nil, err
	}
	s.tok.Store(t)
	s.cfg = cfg
	if cfg.MetricsTLSCertFile != "" {
		if s.metricsCert, err = loadCertFiles(cfg.MetricsTLSCertFile, cfg.MetricsTLSKeyFile, s.log); err != nil {
			return nil, fmt.Errorf("metrics_tls_cert_file: %w", err)
		}
	}
	return s, nil
}

// tokens are the API's tokens: write (token_file; empty: none required)
// and read-only (read_token_file), and the metrics listener's
// (metrics_token_file; empty: none).
type tokens struct{ write, read, metrics []byte }

func readTokens(cfg Config) (*tokens, error) {
	var t tokens
	var err error
	if t.write, err = readToken(cfg.TokenFile); err != nil {
		return nil, fmt.Errorf("token_file: %w", err)
	}
	if t.read, err = readToken(cfg.ReadTokenFile); err != nil {
		return nil, fmt.Errorf("read_token_file: %w", err)
	}
	if t.metrics, err = readToken(cfg.MetricsTokenFile); err != nil {
		return nil, fmt.Errorf("metrics_token_file: %w", err)
	}
	return &t, nil
}

// SetConfig reads the token files again (a reload: a rotated token takes
// effect at once; dashboard sessions signed in with the old one go on
// until they expire). It returns the keys that changed but need a
// restart, or an error naming the bad key, in which case nothing changes.
func (s *Server) SetConfig(cfg Config) (needRestart []string, err error) {
	t, err := readTokens(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Listen != s.cfg.Listen {
		needRestart = append(needRestart, "listen")
	}
	if !slices.Equal(cfg.Hosts, s.cfg.Hosts) {
		needRestart = append(needRestart, "hosts")
	}
	if cfg.MetricsListen != s.cfg.MetricsListen || cfg.MetricsTLSCertFile != s.cfg.MetricsTLSCertFile || cfg.MetricsTLSKeyFile != s.cfg.MetricsTLSKeyFile {
		needRestart = append(needRestart, "metrics_listen")
	}
	s.tok.Store(t)
	return needRestart, nil
}

// readToken reads a token file (first line, surrounding space trimmed).
func readToken(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tok, _, _ := strings.Cut(string(data), "\n")
	tok = strings.TrimSpace(tok)
	if len(tok) < 16 {
		return nil, fmt.Errorf("%s: the token must be at least 16 characters (e.g. openssl rand -hex 32)", path)
	}
	return []byte(tok), nil
}

// access levels
type access int

const (
	noAccess access = iota
	readAccess
	writeAccess
)

// accessOf checks the request's bearer token, or the dashboard's cookie.
func (s *Server) accessOf(r *http.Request) access {
	if len(s.tok.Load().write) == 0 {
		return writeAccess // loopback without tokens: open, as configured
	}
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return s.levelOf([]byte(strings.TrimSpace(got)))
	}
	if c, err := r.Cookie(cookieName); err == nil {
		return s.sess.check(c.Value)
	}
	return noAccess
}

// levelOf compares a token with the configured ones in constant time.
func (s *Server) levelOf(tok []byte) access {
	t := s.tok.Load()
	if len(t.write) == 0 {
		return writeAccess
	}
	if subtle.ConstantTimeCompare(tok, t.write) == 1 {
		return writeAccess
	}
	if len(t.read) > 0 && subtle.ConstantTimeCompare(tok, t.read) == 1 {
		return readAccess
	}
	return noAccess
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/nodes", s.read(s.nodes))
	mux.HandleFunc("/api/sessions", s.read(s.sessions))
	mux.HandleFunc("/api/load", s.read(s.loadHistory))
	mux.HandleFunc("/api/pins", s.read(s.pins))
	mux.HandleFunc("POST /api/users/{user}/pin", s.write(s.pin))
	mux.HandleFunc("DELETE /api/users/{user}/pin", s.writeDelete(s.unpin))
	mux.HandleFunc("/api/users/{user}/rdp-file", s.write(s.rdpFile))
	mux.HandleFunc("/api/recordings", s.ops(s.recordings))
	mux.HandleFunc("/api/recordings/{id}", s.ops(s.recordingFile))
	mux.HandleFunc("/api/nodes/{name}/{action}", s.write(s.drain))
	mux.HandleFunc("/api/scale-in", s.write(s.scaleIn))
	mux.HandleFunc("/api/identities", s.read(s.identities))
	mux.HandleFunc("DELETE /api/identities/{user}", s.writeDelete(s.revokeIdentity))
	mux.HandleFunc("/metrics", s.read(s.metricsHandler))
	mux.HandleFunc("/healthz", s.read(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "uptime_seconds": int(time.Since(s.startedAt).Seconds())})
	}))
	mux.HandleFunc("/api/access", s.read(s.access))
	mux.HandleFunc("GET /{$}", s.dashboard)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("GET /_poolgate/signin", s.signIn)
	mux.HandleFunc("GET /_poolgate/callback", s.signInDone)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if s.accessOf(r) == noAccess {
			s.unauthorized(w)
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return s.guard(mux)
}

func (s *Server) unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="poolgate"`)
	writeError(w, http.StatusUnauthorized, "a valid bearer token is required (Authorization: Bearer TOKEN)")
}

// read wraps a GET endpoint.
func (s *Server) read(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.accessOf(r) == noAccess {
			s.unauthorized(w)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use GET")
			return
		}
		h(w, r)
	}
}

// write wraps a POST endpoint that changes state.
func (s *Server) write(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch s.accessOf(r) {
		case noAccess:
			s.unauthorized(w)
			return
		case readAccess:
			writeError(w, http.StatusForbidden, "this token may only read; changes need the token from token_file")
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use POST")
			return
		}
		h(w, r)
	}
}

func (s *Server) nodes(w http.ResponseWriter, r *http.Request) {
	out := []NodeJSON{}
	disc := DiscoveryJSON{Source: "static"}
	if s.discovery != nil {
		disc = s.discovery()
		if disc.LastSuccess != nil {
			disc.AgeSeconds = int(time.Since(*disc.LastSuccess).Seconds())
		}
	}
	protected := map[string]bool{}
	for _, name := range disc.Protected {
		protected[name] = true
	}
	for _, n := range s.pool.Nodes() {
		weight := n.Weight
		if weight <= 0 {
			weight = 1
		}
		_, health := checkState(n.Check(balancer.SSH))
		nj := NodeJSON{
			Name: n.Name, SSH: n.SSH, HTTP: n.HTTP, Weight: weight, State: string(n.State),
			Sessions: SessionCount{SSH: n.Sessions.Of(balancer.SSH), HTTP: n.Sessions.Of(balancer.HTTP), RDP: n.Sessions.Of(balancer.RDP)},
			Users:    append([]string{}, n.Users...), Pinned: n.Pinned, Health: health, Changed: n.Changed.UTC(),
			Protected: protected[n.Name],
			Load:      loadJSON(n),
		}
		if n.RDP != "" {
			nj.RDP = n.RDP
			nj.RDPState, nj.RDPHealth = checkState(n.Check(balancer.RDP))
		}
		if !n.IdleSince.IsZero() {
			idle := n.IdleSince.UTC()
			nj.IdleSince = &idle
		}
		if n.HTTP != "" {
			nj.HTTPState, nj.HTTPHealth = checkState(n.Check(balancer.HTTP))
		}
		out = append(out, nj)
	}
	writeJSON(w, http.StatusOK, NodesJSON{Nodes: out, Discovery: disc, State: stateOf(s.pool)})
}

// checkState is a check's state for ops ("unchecked", "up" or "down")
// and its detail.
func checkState(c balancer.CheckStatus) (state, detail string) {
	switch {
	case !c.Checked:
		return "unchecked", "not checked yet"
	case c.Up:
		return "up", c.Detail
	}
	return "down", c.Detail
}

// figure is v, or nil when it was not measured.
func figure(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// loadJSON is a node's load figures and its last scrape error.
func loadJSON(n balancer.NodeStatus) LoadJSON {
	l := n.Load
	if !l.Measured() {
		return LoadJSON{Error: n.LoadError}
	}
	at := l.At.UTC()
	return LoadJSON{CPU: figure(l.CPU), Memory: figure(l.Memory), GPU: figure(l.GPU), GPUMemory: figure(l.GPUMemory), Updated: &at, Stale: n.LoadStale, Error: n.LoadError}
}

// loadHistory answers GET /api/load: every node's recent samples.
func (s *Server) loadHistory(w http.ResponseWriter, _ *http.Request) {
	out := LoadHistoryJSON{Nodes: map[string][]LoadSampleJSON{}}
	for _, n := range s.pool.Nodes() {
		samples := []LoadSampleJSON{}
		for _, l := range s.pool.LoadHistory(n.Name) {
			samples = append(samples, LoadSampleJSON{At: l.At.UTC(), CPU: figure(l.CPU), Memory: figure(l.Memory), GPU: figure(l.GPU), GPUMemory: figure(l.GPUMemory)})
		}
		out.Nodes[n.Name] = samples
	}
	writeJSON(w, http.StatusOK, out)
}

// scaleIn deletes instances idle for ?idle= (a duration, at least 1m),
// keeping ?keep= running; ?dry_run=true only says what it would do.
func (s *Server) scaleIn(w http.ResponseWriter, r *http.Request) {
	if s.scaler == nil {
		writeError(w, http.StatusNotImplemented, "scale-in needs discovery.azure; this gateway uses a static node list")
		return
	}
	q := r.URL.Query()
	idle, err := time.ParseDuration(q.Get("idle"))
	switch {
	case q.Get("idle") == "":
		writeError(w, http.StatusBadRequest, "idle: missing; say how long an instance must have had no session, e.g. idle=2h")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("idle: %q is not a duration (e.g. 90m, 2h)", q.Get("idle")))
		return
	case idle < time.Minute:
		writeError(w, http.StatusBadRequest, "idle: must be at least 1m")
		return
	}
	keep := 0
	if v := q.Get("keep"); v != "" {
		if keep, err = strconv.Atoi(v); err != nil || keep < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("keep: %q is not a whole number of instances (0 or more)", v))
			return
		}
	}
	dryRun := false
	if v := q.Get("dry_run"); v != "" {
		if dryRun, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("dry_run: %q is not true or false", v))
			return
		}
	}
	res, err := s.scaler.ScaleIn(r.Context(), idle, keep, dryRun)
	if err != nil {
		s.log.Error("scale-in failed", zap.Error(err), zap.String("client", r.RemoteAddr))
		writeError(w, http.StatusBadGateway, "scale-in: "+err.Error())
		return
	}
	if !dryRun {
		s.log.Info("scale-in requested through the admin API", zap.Duration("idle", idle), zap.Int("keep", keep), zap.String("client", r.RemoteAddr))
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	node, user := r.URL.Query().Get("node"), r.URL.Query().Get("user")
	if user != "" {
		var ok bool
		if user, ok = userParam(w, user); !ok {
			return
		}
	}
	out := []SessionJSON{}
	for _, ss := range s.pool.Sessions() {
		if (node != "" && ss.Node != node) || (user != "" && ss.User != user) {
			continue
		}
		out = append(out, SessionJSON{ID: ss.ID, User: ss.User, Node: ss.Node, Protocol: string(ss.Protocol), Client: ss.Client, Started: ss.Started.UTC(), Replica: ss.Replica})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	writeJSON(w, http.StatusOK, SessionsJSON{Sessions: out})
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	var err error
	switch action {
	case "drain":
		err = s.pool.Drain(name)
	case "undrain":
		err = s.pool.Undrain(name)
	default:
		writeError(w, http.StatusNotFound, "no such action "+action+"; use drain or undrain")
		return
	}
	if errors.Is(err, balancer.ErrUnknownNode) {
		writeError(w, http.StatusNotFound, "no node named "+name)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("node "+action+" requested through the admin API", zap.String("node", name), zap.String("client", r.RemoteAddr))
	for _, n := range s.pool.Nodes() {
		if n.Name == name {
			writeJSON(w, http.StatusOK, DrainJSON{Node: name, State: string(n.State), Sessions: SessionCount{SSH: n.Sessions.Of(balancer.SSH), HTTP: n.Sessions.Of(balancer.HTTP)}})
			return
		}
	}
	writeError(w, http.StatusNotFound, "no node named "+name)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorJSON{Error: msg, Status: status})
}
