package httpgw

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
)

// anonymousGet sends a request with the given cookies and no proof.
func (e *env) anonymousGet(path string, cookies ...string) int {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	if len(cookies) > 0 {
		req.Header.Set("Cookie", strings.Join(cookies, "; "))
	}
	resp, err := e.browser().Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// assertNothingCounted fails when any HTTP lease was ever taken, or any
// user is pinned or counted on a node.
func (e *env) assertNothingCounted(what string) {
	e.t.Helper()
	if n := e.bal.Started(balancer.HTTP); n != 0 {
		e.t.Fatalf("%s: %d HTTP leases were taken, want none", what, n)
	}
	for _, n := range e.bal.Nodes() {
		if n.Sessions.Of(balancer.HTTP) != 0 || len(n.Users) != 0 || n.Pinned != 0 {
			e.t.Fatalf("%s: node %s counts %d HTTP sessions, users %v, %d pinned; want nothing", what, n.Name, n.Sessions.Of(balancer.HTTP), n.Users, n.Pinned)
		}
	}
}

func TestAnonymousRequestsCountNothing(t *testing.T) {
	e := newEnv(t, Config{}, false)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 150 {
		name := fmt.Sprintf("u%08x", rnd.Uint32())
		paths := []string{"/hub/anon", "/hub/login", "/user/" + name + "/", "/user/" + name + "/static/x.js", "/user/" + name + "/api"}
		e.anonymousGet(paths[i%len(paths)], "jupyterhub-user-"+name+"=forged")
	}
	for range 20 {
		e.anonymousGet("/hub/anon", "jupyterhub-user-alice=forged")
		e.anonymousGet("/user/alice/", "jupyterhub-user-alice=forged")
	}
	// A failed login (the hub shows the form again) proves nothing.
	resp, err := e.browser().PostForm(e.url+"/hub/login", url.Values{"username": {"alice"}, "password": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The server refuses a stranger: nothing either.
	if code := e.anonymousGet("/user/nobody/tree"); code != 403 {
		t.Fatalf("/user/nobody/tree: %d, want the hub's 403", code)
	}
	e.assertNothingCounted("after anonymous requests")
}

func TestProofsCountTheUserOnTheNodeThatAnswered(t *testing.T) {
	e := newEnv(t, Config{}, false)
	// A login the hub accepted (redirect + jupyterhub-hub-login).
	b := e.browser()
	resp, err := b.PostForm(e.url+"/hub/login", url.Values{"username": {"Alice"}, "password": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	node := e.httpSessions()["alice"]
	if node == "" {
		t.Fatalf("a real login is not counted: %+v", e.bal.Sessions())
	}
	if _, body, _ := e.get(b, "/hub/home"); body != node+" home of alice" {
		t.Fatalf("after login, /hub/home says %q; the lease is on %s", body, node)
	}
	// A guarded page of bob's own server.
	_, bobNode, _ := e.get(e.browser(), "/user/bob/api/contents")
	if got := e.httpSessions()["bob"]; got != bobNode {
		t.Fatalf("bob's session is on %q, his server answered from %s", got, bobNode)
	}
	// An accepted WebSocket.
	c, br := dialWebSocket(t, e.url, "/user/carol/ws")
	defer c.Close()
	fmt.Fprintf(c, "ping\n")
	line, _ := br.ReadString('\n')
	if got := e.httpSessions()["carol"]; got == "" || !strings.HasPrefix(line, got+" ") {
		t.Fatalf("carol's WebSocket on %q, session on %q", line, got)
	}
}

func TestHubsNeverSeeTheAdminCookieNorTellTheirServer(t *testing.T) {
	hsts := 48 * time.Hour
	e := newEnv(t, Config{TLS: boolPtr(true), HSTSMaxAge: &hsts}, false)
	req, _ := http.NewRequest("GET", e.url+"/hub/anon", nil)
	req.Header.Add("Cookie", "a=1; "+AdminCookie+"=v1.2.3.sig; b=2")
	req.Header.Add("Cookie", AdminCookie+"=again")
	resp, err := e.browser().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var seen http.Header
	for _, h := range e.hubs {
		h.mu.Lock()
		if h.seen != nil {
			seen = h.seen
		}
		h.mu.Unlock()
	}
	if got := strings.Join(seen.Values("Cookie"), " | "); strings.Contains(got, AdminCookie) || got != "a=1; b=2" {
		t.Fatalf("the hub saw Cookie %q, want %q", got, "a=1; b=2")
	}
	if v := resp.Header.Values("Server"); len(v) != 0 {
		t.Fatalf("the hub's Server header passed through: %q", v)
	}
	if v := resp.Header.Values("Strict-Transport-Security"); len(v) != 1 || v[0] != "max-age=172800" {
		t.Fatalf("Strict-Transport-Security %q, want one max-age=172800", v)
	}
}

func TestAccessLogShowsThePathAsReceived(t *testing.T) {
	e := newEnv(t, Config{}, false)
	paths := []string{"/user/alice%2f..%2fbob/", "/user/alice/%2e%2e/bob/", "/user/alice/../bob/"}
	for _, p := range paths {
		// Sent raw: a client library would clean the dots.
		c, br := rawRequest(t, e.url, "GET "+p+"?token=secret HTTP/1.1")
		_, _ = http.ReadResponse(br, nil)
		c.Close()
	}
	logged := map[string]bool{}
	for _, entry := range e.logs.FilterMessage("http request").All() {
		p, _ := entry.ContextMap()["path"].(string)
		logged[p] = true
		if strings.Contains(p, "secret") {
			t.Fatalf("the query was logged: %q", p)
		}
	}
	for _, p := range paths {
		if !logged[p] {
			t.Errorf("access log lacks %q; it has %v", p, logged)
		}
	}
}
