package httpgw

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/poolgate/poolgate/balancer"
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
	mux.HandleFunc("/hub/anon", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, name) })
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
	mux.HandleFunc("/user/{user}/events", func(w http.ResponseWriter, r *http.Request) {
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
	if tlsHub {
		h.srv = httptest.NewTLSServer(mux)
	} else {
		h.srv = httptest.NewServer(mux)
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
	e := &env{t: t, bal: balancer.New(balancer.Config{}, balancer.Options{})}
	var nodes []balancer.Node
	for i := 1; i <= 3; i++ {
		h := newFakeHub(t, fmt.Sprintf("node-%d", i), tlsHubs)
		e.hubs = append(e.hubs, h)
		nodes = append(nodes, balancer.Node{Name: h.name, SSH: "127.0.0.1:1", HTTP: h.addr()})
	}
	e.bal.SetNodes(nodes)
	for _, n := range nodes {
		e.bal.SetHealth(n.Name, true, "ok")
		e.bal.SetHTTPHealth(n.Name, true, "ok")
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
	gw, err := New(cfg, bal, Options{StateDir: t.TempDir(), Logger: zap.New(core), CertCheckInterval: 20 * time.Millisecond})
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

func TestRoutingFollowsUsers(t *testing.T) {
	e := newEnv(t, Config{}, false)
	nodes := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol"} {
		code, body, _ := e.get(e.browser(), "/user/"+u+"/tree")
		if code != 200 {
			t.Fatalf("%s: %d %s", u, code, body)
		}
		nodes[u] = body
	}
	if nodes["alice"] == nodes["bob"] || nodes["bob"] == nodes["carol"] || nodes["alice"] == nodes["carol"] {
		t.Fatalf("three users on %v, want three nodes", nodes)
	}
	// A second browser of alice's, with no cookies, lands on her node.
	if _, body, _ := e.get(e.browser(), "/user/alice/lab"); body != nodes["alice"] {
		t.Fatalf("alice's second browser went to %s, want %s", body, nodes["alice"])
	}
	got := e.httpSessions()
	if len(got) != 3 || got["alice"] != nodes["alice"] || got["bob"] != nodes["bob"] {
		t.Fatalf("sessions %v, want one per user on their node %v", got, nodes)
	}
	// A user the hub does not know as logged in leaves no session and no
	// pin behind.
	if code, _, _ := e.get(e.browser(), "/user/nobody/tree"); code != 403 {
		t.Fatalf("nobody: %d", code)
	}
	if _, ok := e.httpSessions()["nobody"]; ok {
		t.Fatal("a request the hub refused started a session")
	}
	// The access log has user, node and status, and no cookie.
	found := false
	for _, l := range e.logs.FilterMessage("http request").All() {
		m := l.ContextMap()
		if m["user"] == "alice" && m["node"] == nodes["alice"] && m["status"] == int64(200) && m["path"] == "/user/alice/lab" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no access log line for alice: %v", e.logs.All())
	}
}

func TestSSHPinIsFollowed(t *testing.T) {
	e := newEnv(t, Config{}, false)
	// bob and carol take the first two nodes over SSH; alice's SSH
	// session then goes to the third.
	for _, u := range []string{"bob", "carol"} {
		if _, err := e.bal.Acquire(u, balancer.SSH, ""); err != nil {
			t.Fatal(err)
		}
	}
	l, err := e.bal.Acquire("alice", balancer.SSH, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, body, _ := e.get(e.browser(), "/user/alice/"); body != l.Node().Name {
		t.Fatalf("alice's browser went to %s, her SSH session is on %s", body, l.Node().Name)
	}
}

func TestLoginFormAndAffinityCookie(t *testing.T) {
	e := newEnv(t, Config{MaxLoginForm: 1024}, false)
	l, _ := e.bal.Acquire("alice", balancer.SSH, "")
	node := l.Node().Name
	b := e.browser()
	// The login page itself: anonymous, routed anywhere, gets a cookie.
	if code, _, resp := e.get(b, "/hub/anon"); code != 200 || len(resp.Header["Set-Cookie"]) == 0 {
		t.Fatalf("anonymous page: %d, cookies %v", code, resp.Header["Set-Cookie"])
	}
	form := "username=Alice&password=pw&next=%2Fhub%2Fhome"
	resp, err := b.Post(e.url+"/hub/login?next=%2Fhub%2Fhome", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var hub *fakeHub
	for _, h := range e.hubs {
		if h.name == node {
			hub = h
		}
	}
	hub.mu.Lock()
	if hub.loginBody != form {
		t.Fatalf("alice's node got login body %q, want it unchanged %q", hub.loginBody, form)
	}
	hub.mu.Unlock()
	// /hub/home names no user: the affinity cookie takes it to alice's node,
	// where her hub login cookie is valid.
	if code, body, _ := e.get(b, "/hub/home"); code != 200 || body != node+" home of alice" {
		t.Fatalf("hub home: %d %q, want alice's home on %s", code, body, node)
	}
	if got := e.httpSessions()["alice"]; got != node {
		t.Fatalf("alice's HTTP session on %q, want %s", got, node)
	}

	// A forged cookie (another node's name, MAC of the original) is ignored.
	u, _ := url.Parse(e.url)
	var aff string
	for _, c := range b.Jar.Cookies(u) {
		if c.Name == AffinityCookie {
			aff = c.Value
		}
	}
	p64, m64, _ := strings.Cut(aff, ".")
	payload, _ := decodeB64(p64)
	forgedTo := "node-1"
	if node == "node-1" {
		forgedTo = "node-2"
	}
	forged := encodeB64([]byte(strings.Replace(string(payload), node, forgedTo, 1))) + "." + m64
	req, _ := http.NewRequest("GET", e.url+"/hub/home", nil)
	req.AddCookie(&http.Cookie{Name: "jupyterhub-hub-login", Value: node + ":alice"})
	req.AddCookie(&http.Cookie{Name: AffinityCookie, Value: forged})
	resp, err = http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := resp.Header.Get("Set-Cookie"); !strings.HasPrefix(c, AffinityCookie+"=") || !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Lax") {
		t.Fatalf("a forged cookie was not replaced with a fresh one: %q", c)
	}
	if strings.Contains(resp.Header.Get("Set-Cookie"), forged) {
		t.Fatal("the forged value was kept")
	}

	// A failed login (the hub shows the form again) starts no session.
	resp, err = e.browser().Post(e.url+"/hub/login", "application/x-www-form-urlencoded", strings.NewReader("username=eve&password=wrong"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, ok := e.httpSessions()["eve"]; ok {
		t.Fatal("a failed login started a session")
	}

	// An oversized form gets 413 and a page saying so.
	resp, err = e.browser().Post(e.url+"/hub/login", "application/x-www-form-urlencoded", strings.NewReader("username=alice&x="+strings.Repeat("a", 2000)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(body), "too large") {
		t.Fatalf("oversized form: %d %s", resp.StatusCode, body)
	}
}

func TestEncodedPathTricks(t *testing.T) {
	e := newEnv(t, Config{}, false)
	for _, p := range []string{"/user/%2e%2e/", "/user/alice%2Fbob/", "/user/%2e%2e/hub/admin", "/user/a%00b/"} {
		req, _ := http.NewRequest("GET", e.url+p, nil)
		req.URL.RawPath, req.URL.Path = p, mustUnescape(p)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "names a user") {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	if len(e.bal.Sessions()) != 0 {
		t.Fatalf("bad paths left sessions: %+v", e.bal.Sessions())
	}
}

func mustUnescape(p string) string {
	s, err := url.PathUnescape(p)
	if err != nil {
		panic(err)
	}
	return s
}

func TestForwardedHeaders(t *testing.T) {
	e := newEnv(t, Config{}, false)
	req, _ := http.NewRequest("GET", e.url+"/user/alice/", nil)
	req.Host = "pool.example.com"
	req.Header.Set("X-Forwarded-For", "203.0.113.66")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	node, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, h := range e.hubs {
		if h.name != string(node) {
			continue
		}
		h.mu.Lock()
		seen := h.seen
		h.mu.Unlock()
		want := map[string]string{"Host": "pool.example.com", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
			"X-Forwarded-Host": "pool.example.com", "Sec-Fetch-Site": "same-origin"}
		for k, v := range want {
			if got := strings.Join(seen.Values(k), ","); got != v {
				t.Errorf("hub saw %s %q, want %q", k, got, v)
			}
		}
		return
	}
	t.Fatalf("no hub named %q", node)
}

// dialWebSocket opens an upgraded connection to path through the gateway.
func dialWebSocket(t *testing.T, base, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	u, _ := url.Parse(base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, u.Host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c, br
}

func TestStreamsKeepTheSessionAndIdleEndsIt(t *testing.T) {
	e := newEnv(t, Config{SessionIdle: 150 * time.Millisecond}, false)
	c, br := dialWebSocket(t, e.url, "/user/alice/ws")
	fmt.Fprintf(c, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasSuffix(line, " ping\n") {
		t.Fatalf("echo through the WebSocket: %q %v", line, err)
	}
	node := strings.Fields(line)[0]
	time.Sleep(600 * time.Millisecond) // four idle windows with the socket open
	if got := e.httpSessions()["alice"]; got != node {
		t.Fatalf("with a WebSocket open for longer than the idle window, alice's session is %q, want on %s", got, node)
	}
	// The event stream's first event arrives while the stream stays open.
	resp, err := http.Get(e.url + "/user/bob/events")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(ev, "data: node-") {
		t.Fatalf("event stream: %q %v", ev, err)
	}
	if _, ok := e.httpSessions()["bob"]; !ok {
		t.Fatal("bob's open event stream has no session")
	}
	resp.Body.Close()
	c.Close()
	waitFor(t, "sessions to end after the idle window", func() bool { return len(e.httpSessions()) == 0 })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUnavailablePages(t *testing.T) {
	e := newEnv(t, Config{}, false)
	_, node, _ := e.get(e.browser(), "/user/alice/")
	var hub *fakeHub
	for _, h := range e.hubs {
		if h.name == node {
			hub = h
		}
	}
	hub.srv.Close() // the hub dies; the health check has not noticed yet
	code, body, resp := e.get(e.browser(), "/user/alice/")
	if code != 503 || !strings.Contains(body, "is not answering") || !strings.Contains(body, node) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("dead hub: %d %q", code, body)
	}
	e.bal.SetHTTPHealth(node, false, "GET /hub/health: connection refused")
	code, other, _ := e.get(e.browser(), "/user/alice/")
	if code != 200 || other == node {
		t.Fatalf("after the health check: %d on %s, want another node than %s", code, other, node)
	}
	if got := e.httpSessions()["alice"]; got != other {
		t.Fatalf("alice's session is on %q, want %s", got, other)
	}
	for _, h := range e.hubs {
		e.bal.SetHTTPHealth(h.name, false, "down")
	}
	code, body, _ = e.get(e.browser(), "/hub/anon")
	if code != 503 || !strings.Contains(body, "No node available") || !strings.Contains(body, `http-equiv="refresh"`) {
		t.Fatalf("no node: %d %q", code, body)
	}

	// Scale from zero: a node is starting; the page says so and reloads.
	st := &fakeStarter{ok: true}
	e.gw.starter = st
	for _, path := range []string{"/hub/anon", "/user/carol/lab"} {
		code, body, resp = e.get(e.browser(), path)
		if code != 503 || !strings.Contains(body, "Starting a node for you") || !strings.Contains(body, `http-equiv="refresh"`) || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s while a node starts: %d %q", path, code, body)
		}
	}
	if st.calls != 2 {
		t.Errorf("StartNode called %d times, want once a request", st.calls)
	}
	st.ok = false // none is coming (nodes exist but are full): the plain page
	if code, body, _ = e.get(e.browser(), "/hub/anon"); code != 503 || !strings.Contains(body, "No node available") {
		t.Fatalf("no start offered: %d %q", code, body)
	}
	for _, h := range e.hubs {
		if h.name != node { // that one's hub is still stopped
			e.bal.SetHTTPHealth(h.name, true, "ok")
		}
	}
	if code, _, _ := e.get(e.browser(), "/hub/anon"); code != 200 {
		t.Fatalf("with hubs up again: %d", code)
	}
}

// fakeStarter stands in for scale from zero.
type fakeStarter struct {
	ok    bool
	calls int
}

func (f *fakeStarter) StartNode() (time.Time, bool) {
	f.calls++
	return time.Now().Add(time.Minute), f.ok
}

func TestTLSFrontEnd(t *testing.T) {
	e := newEnv(t, Config{TLS: boolPtr(true)}, false)
	c := e.browser()
	code, _, resp := e.get(c, "/hub/anon")
	if code != 200 || resp.Proto != "HTTP/2.0" {
		t.Fatalf("over TLS: %d %s, want 200 over HTTP/2", code, resp.Proto)
	}
	if c := resp.Header.Get("Set-Cookie"); !strings.Contains(c, "Secure") {
		t.Fatalf("affinity cookie over TLS is not Secure: %q", c)
	}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	if code, _, resp := e.get(h1, "/hub/anon"); code != 200 || resp.Proto != "HTTP/1.1" {
		t.Fatalf("HTTP/1.1 over TLS: %d %s", code, resp.Proto)
	}
	// Plain HTTP to the TLS port is redirected, not reset.
	plain := strings.Replace(e.url, "https://", "http://", 1)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(plain + "/user/alice/?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 308 || resp.Header.Get("Location") != e.url+"/user/alice/?x=1" {
		t.Fatalf("plain HTTP on the TLS port: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// WebSockets work over TLS too (HTTP/1.1 upgrade).
	u, _ := url.Parse(e.url)
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /user/alice/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", u.Host)
	br := bufio.NewReader(conn)
	if r, err := http.ReadResponse(br, nil); err != nil || r.StatusCode != 101 {
		t.Fatalf("upgrade over TLS: %v %v", r, err)
	}
	fmt.Fprintf(conn, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || !strings.HasSuffix(line, "hello\n") {
		t.Fatalf("echo over TLS: %q %v", line, err)
	}
}

func TestSelfSignedAndReload(t *testing.T) {
	dir := t.TempDir()
	bal := balancer.New(balancer.Config{}, balancer.Options{})
	core, logs := observer.New(zap.InfoLevel)
	s, err := New(Config{Listen: "127.0.0.1:0", UpstreamTLS: boolPtr(false)}, bal, Options{StateDir: dir, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	fi, err := os.Stat(filepath.Join(dir, "http_selfsigned.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("self-signed key: %v %v", fi, err)
	}
	if logs.FilterMessageSnippet("self-signed").Len() != 1 {
		t.Fatalf("no log line about the self-signed certificate: %v", logs.All())
	}

	// Files configured: a change on disk is picked up without a restart.
	certDir := t.TempDir()
	c1, k1, _, err := selfSigned(t.TempDir(), []string{"one.example"})
	if err != nil {
		t.Fatal(err)
	}
	c2, k2, _, _ := selfSigned(t.TempDir(), []string{"two.example"})
	cert, key := filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key")
	copyFile(t, c1, cert)
	copyFile(t, k1, key)
	e := newEnv(t, Config{TLS: boolPtr(true), CertFile: cert, KeyFile: key}, false)
	served := func() string {
		u, _ := url.Parse(e.url)
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].DNSNames[0]
	}
	if got := served(); got != "one.example" {
		t.Fatalf("served %s", got)
	}
	copyFile(t, k2, key)
	copyFile(t, c2, cert)
	waitFor(t, "the new certificate to be served", func() bool { return served() == "two.example" })
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		t.Fatal(err)
	}
}

func TestUpstreamTLSPinning(t *testing.T) {
	e := newEnv(t, Config{}, true)
	if code, body, _ := e.get(e.browser(), "/user/alice/"); code != 200 || !strings.HasPrefix(body, "node-") {
		t.Fatalf("through pinned TLS hubs: %d %q", code, body)
	}
	data, err := os.ReadFile(filepath.Join(e.gw.stateDirForTest(), "http_hub_pins.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pins map[string]string
	if err := json.Unmarshal(data, &pins); err != nil || len(pins) != 1 {
		t.Fatalf("pins file %s: %v", data, err)
	}
	// A different certificate for a pinned node is refused.
	p := &hubPins{path: filepath.Join(t.TempDir(), "p.json"), log: zap.NewNop(), pins: map[string]string{}, config: map[string]bool{}}
	if err := p.check("n", []byte("cert one")); err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert one")); err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert two")); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("changed certificate: %v", err)
	}

	// A configured pin that does not match: the user gets the 503 page.
	pinned := map[string]string{}
	for _, h := range []string{"node-1", "node-2", "node-3"} {
		pinned[h] = "sha256:" + strings.Repeat("00", 32)
	}
	e2 := newEnv(t, Config{UpstreamPins: pinned}, true)
	if code, body, _ := e2.get(e2.browser(), "/user/alice/"); code != 503 || !strings.Contains(body, "not answering") {
		t.Fatalf("wrong pin: %d %q", code, body)
	}
	if e2.logs.FilterMessage("hub did not answer").Len() == 0 {
		t.Fatal("the pin mismatch was not logged")
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	e := newEnv(t, Config{}, false)
	c, br := dialWebSocket(t, e.url, "/user/alice/ws")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("the WebSocket stayed open after shutdown")
	}
	if len(e.bal.Sessions()) != 0 {
		t.Fatalf("sessions left after shutdown: %+v", e.bal.Sessions())
	}
}

func TestCloseDoesNotWaitForSilentClients(t *testing.T) {
	e := newEnv(t, Config{TLS: boolPtr(true), ReadHeaderTimeout: time.Minute}, false)
	u, _ := url.Parse(e.url)
	c, err := net.Dial("tcp", u.Host) // connects, never sends a byte
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	_ = e.gw.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %s with a silent client", d)
	}
}

func TestAnotherUsersPathKeepsTheBrowsersLogin(t *testing.T) {
	e := newEnv(t, Config{}, false)
	b := e.browser()
	resp, err := b.Post(e.url+"/hub/login", "application/x-www-form-urlencoded", strings.NewReader("username=alice&password=pw"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, aliceHome, _ := e.get(b, "/hub/home")
	// alice opens bob's (shared) server: it is served from bob's node,
	// and her /hub/ pages still go to hers.
	if code, _, _ := e.get(b, "/user/bob/tree"); code != 200 {
		t.Fatalf("bob's server: %d", code)
	}
	if _, home, _ := e.get(b, "/hub/home"); home != aliceHome || !strings.HasSuffix(home, "home of alice") {
		t.Fatalf("after visiting bob's server, alice's hub home is %q, was %q", home, aliceHome)
	}
}
