package httpgw

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeHub stands in for one node's JupyterHub: enough of its behaviour
// (login cookies valid only on this node, per-user paths, WebSocket and
// event streams) to check routing without Python.
type fakeHub struct {
	name string
	srv  *httptest.Server

	mu        sync.Mutex
	loginBody string
	seen      http.Header
	paths     []string // every request's path, as received
}

func newFakeHub(t *testing.T, name string, tlsHub bool) *fakeHub {
	h := &fakeHub{name: name}
	mux := http.NewServeMux()
	mux.HandleFunc("/hub/health", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /hub/login", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.loginBody = string(body)
		h.mu.Unlock()
		v, _ := url.ParseQuery(string(body))
		if v.Get("password") == "wrong" {
			fmt.Fprint(w, "login form again")
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "jupyterhub-hub-login", Value: name + ":" + strings.ToLower(v.Get("username")), Path: "/hub/"})
		http.Redirect(w, r, "/hub/home", http.StatusFound)
	})
	mux.HandleFunc("/hub/home", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("jupyterhub-hub-login")
		if err != nil || !strings.HasPrefix(c.Value, name+":") {
			http.Redirect(w, r, "/hub/login", http.StatusFound) // logged out: a cookie from another node
			return
		}
		fmt.Fprintf(w, "%s home of %s", name, strings.TrimPrefix(c.Value, name+":"))
	})
	mux.HandleFunc("/hub/anon", func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = r.Header.Clone()
		h.mu.Unlock()
		// As Tornado does; the gateway must not pass either on.
		w.Header().Set("Server", "TornadoServer/6.2")
		w.Header().Set("Strict-Transport-Security", "max-age=1")
		fmt.Fprint(w, name)
	})
	mux.HandleFunc("/user/{user}/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(brw, "%s %s", name, line)
			brw.Flush()
		}
	})
	mux.HandleFunc("/user/{user}/api/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\n", name)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/user/{user}/", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("user") == "nobody" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		h.mu.Lock()
		h.seen = r.Header.Clone()
		h.seen.Set("Host", r.Host)
		h.mu.Unlock()
		fmt.Fprint(w, name)
	})
	all := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.paths = append(h.paths, r.URL.EscapedPath())
		h.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
	if tlsHub {
		h.srv = httptest.NewTLSServer(all)
	} else {
		h.srv = httptest.NewServer(all)
	}
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fakeHub) addr() string { return h.srv.Listener.Addr().String() }

type env struct {
	t    *testing.T
	bal  *balancer.Balancer
	hubs []*fakeHub
	gw   *Server
	url  string // gateway base URL
	logs *observer.ObservedLogs
}

func newEnv(t *testing.T, cfg Config, tlsHubs bool) *env {
	t.Helper()
	return newEnvWith(t, cfg, tlsHubs, nil)
}

// newEnvWith is newEnv with the gateway's view of the balancer given by
// wrap (nil: the balancer itself).
func newEnvWith(t *testing.T, cfg Config, tlsHubs bool, wrap func(*balancer.Balancer) Balancer) *env {
	t.Helper()
	return newEnvOpts(t, cfg, tlsHubs, wrap, nil)
}

// newEnvOpts is newEnvWith with the users' page users (nil: off).
func newEnvOpts(t *testing.T, cfg Config, tlsHubs bool, wrap func(*balancer.Balancer) Balancer, users *UserPage) *env {
	t.Helper()
	return newEnvMetrics(t, cfg, tlsHubs, wrap, users, nil)
}

// newEnvMetrics is newEnvOpts recording into m.
func newEnvMetrics(t *testing.T, cfg Config, tlsHubs bool, wrap func(*balancer.Balancer) Balancer, users *UserPage, m *gwmetrics.Front) *env {
	t.Helper()
	e := &env{t: t, bal: balancer.New(balancer.Config{}, balancer.Options{})}
	var nodes []balancer.Node
	for i := 1; i <= 3; i++ {
		h := newFakeHub(t, fmt.Sprintf("node-%d", i), tlsHubs)
		e.hubs = append(e.hubs, h)
		nodes = append(nodes, balancer.Node{Name: h.name, SSH: "127.0.0.1:1", HTTP: h.addr()})
	}
	e.bal.SetNodes(nodes)
	for _, n := range nodes {
		e.bal.SetHealth(n.Name, balancer.SSH, true, "ok")
		e.bal.SetHealth(n.Name, balancer.HTTP, true, "ok")
	}
	if cfg.TLS == nil {
		cfg.TLS = boolPtr(false)
	}
	if cfg.UpstreamTLS == nil {
		cfg.UpstreamTLS = boolPtr(tlsHubs)
	}
	cfg.Listen = "127.0.0.1:0"
	core, logs := observer.New(zap.InfoLevel)
	e.logs = logs
	var bal Balancer = e.bal
	if wrap != nil {
		bal = wrap(e.bal)
	}
	gw, err := New(cfg, bal, Options{StateDir: t.TempDir(), Logger: zap.New(core), CertCheckInterval: 20 * time.Millisecond, Users: users, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	e.gw = gw
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gw.Serve(ln) }()
	t.Cleanup(func() { _ = gw.Close(); <-done })
	scheme := "http"
	if *cfg.TLS {
		scheme = "https"
	}
	e.url = scheme + "://" + ln.Addr().String()
	return e
}

// browser is a client with its own cookie jar that does not follow
// redirects, as a test wants to see each answer.
func (e *env) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
}

func (e *env) get(c *http.Client, path string) (int, string, *http.Response) {
	e.t.Helper()
	resp, err := c.Get(e.url + path)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func (e *env) httpSessions() map[string]string {
	out := map[string]string{}
	for _, s := range e.bal.Sessions() {
		if s.Protocol == balancer.HTTP {
			if _, dup := out[s.User]; dup {
				e.t.Fatalf("user %s has two HTTP sessions: %+v", s.User, e.bal.Sessions())
			}
			out[s.User] = s.Node
		}
	}
	return out
}
