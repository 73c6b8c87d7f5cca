package httpgw

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
)

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
	if _, body, _ := e.get(e.browser(), "/user/alice/tree"); body != l.Node().Name {
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
	req, _ := http.NewRequest("GET", e.url+"/user/alice/tree", nil)
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

func TestUnavailablePages(t *testing.T) {
	e := newEnv(t, Config{}, false)
	_, node, _ := e.get(e.browser(), "/user/alice/tree")
	var hub *fakeHub
	for _, h := range e.hubs {
		if h.name == node {
			hub = h
		}
	}
	hub.srv.Close() // the hub dies; the health check has not noticed yet
	code, body, resp := e.get(e.browser(), "/user/alice/tree")
	if code != 503 || !strings.Contains(body, "is not answering") || !strings.Contains(body, node) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("dead hub: %d %q", code, body)
	}
	e.bal.SetHealth(node, balancer.HTTP, false, "GET /hub/health: connection refused")
	alice := e.browser() // proven once: the gateway's cookie names her
	code, other, _ := e.get(alice, "/user/alice/tree")
	if code != 200 || other == node {
		t.Fatalf("after the health check: %d on %s, want another node than %s", code, other, node)
	}
	if got := e.httpSessions()["alice"]; got != other {
		t.Fatalf("alice's session is on %q, want %s", got, other)
	}
	for _, h := range e.hubs { // every hub gone: alice's too
		e.bal.SetHealth(h.name, balancer.HTTP, false, "down")
		e.bal.NodeFailed(h.name, balancer.HTTP)
	}
	code, body, _ = e.get(e.browser(), "/hub/anon")
	if code != 503 || !strings.Contains(body, "No node available") || !strings.Contains(body, `http-equiv="refresh"`) {
		t.Fatalf("no node: %d %q", code, body)
	}

	// Scale from zero: anonymous requests, even naming a user, wake no
	// node; a browser the gateway saw proven does, and the page says so.
	st := &fakeStarter{ok: true}
	e.gw.starter = st
	for _, path := range []string{"/hub/anon", "/user/carol/lab"} {
		if code, body, _ = e.get(e.browser(), path); code != 503 || !strings.Contains(body, "No node available") {
			t.Fatalf("anonymous %s with no node: %d %q", path, code, body)
		}
	}
	if st.calls != 0 {
		t.Fatalf("anonymous requests started %d nodes, want none", st.calls)
	}
	for _, path := range []string{"/hub/anon", "/user/alice/lab"} {
		code, body, resp = e.get(alice, path)
		if code != 503 || !strings.Contains(body, "Starting a node for you") || !strings.Contains(body, `http-equiv="refresh"`) || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s while a node starts: %d %q", path, code, body)
		}
	}
	if st.calls != 2 {
		t.Errorf("StartNode called %d times, want once a request", st.calls)
	}
	st.ok = false // none is coming (nodes exist but are full): the plain page
	if code, body, _ = e.get(alice, "/hub/anon"); code != 503 || !strings.Contains(body, "No node available") {
		t.Fatalf("no start offered: %d %q", code, body)
	}
	for _, h := range e.hubs {
		if h.name != node { // that one's hub is still stopped
			e.bal.SetHealth(h.name, balancer.HTTP, true, "ok")
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
