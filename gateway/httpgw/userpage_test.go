package httpgw

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/identity"
	"github.com/poolgate/poolgate/gateway/identity/identitytest"
)

// pageEnv is a gateway with the users' page on, signing in with a fake
// provider, and key bindings in memory.
type pageEnv struct {
	*env
	idp  *identitytest.Provider
	web  *identity.Web
	keys *identity.MemoryBindings
}

func newPageEnv(t *testing.T, mod func(*UserPage)) *pageEnv {
	t.Helper()
	idp := identitytest.New(t)
	prov, err := identity.New(idp.Config(), identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &pageEnv{idp: idp, web: &identity.Web{Provider: prov, Name: "poolgate_user", Key: identity.NewWebKey()}, keys: identity.NewMemoryBindings(nil)}
	up := &UserPage{SignIn: e.web, Bindings: e.keys, SSHAddr: "0.0.0.0:2222"}
	if mod != nil {
		mod(up)
	}
	e.env = newEnvOpts(t, Config{}, false, nil, up)
	return e
}

func fingerprint(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

func (e *pageEnv) bind(user, seed string) string {
	e.t.Helper()
	fp := fingerprint(seed)
	now := time.Now()
	if err := e.keys.Bind(context.Background(), identity.Binding{User: user, Subject: "sub-" + user, Fingerprint: fp, KeyType: "ssh-ed25519", Bound: now, Until: now.Add(time.Hour)}); err != nil {
		e.t.Fatal(err)
	}
	return fp
}

// signIn signs the browser c in through the provider, as a browser
// follows the redirects.
func (e *pageEnv) signIn(c *http.Client) {
	e.t.Helper()
	code, _, resp := e.get(c, "/_poolgate/")
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/_poolgate/signin" {
		e.t.Fatalf("page without a session: %d to %q, want 303 to the sign-in", code, resp.Header.Get("Location"))
	}
	code, _, resp = e.get(c, "/_poolgate/signin")
	to := resp.Header.Get("Location")
	if code != http.StatusFound || !strings.HasPrefix(to, e.idp.Issuer+"/authorize?") {
		e.t.Fatalf("sign-in: %d to %q", code, to)
	}
	if got, _ := url.Parse(to); got.Query().Get("redirect_uri") != e.url+"/_poolgate/callback" {
		e.t.Fatalf("redirect_uri %q", got.Query().Get("redirect_uri"))
	}
	r, err := c.Get(to)
	if err != nil {
		e.t.Fatal(err)
	}
	r.Body.Close()
	cb := r.Header.Get("Location")
	if !strings.HasPrefix(cb, e.url+"/_poolgate/callback?") {
		e.t.Fatalf("the provider sent the browser to %q", cb)
	}
	code, body, _ := e.get(c, strings.TrimPrefix(cb, e.url))
	if code != http.StatusOK || !strings.Contains(body, `url=/_poolgate/`) {
		e.t.Fatalf("callback: %d %s", code, body)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

// page fetches the users' page and its form token.
func (e *pageEnv) page(c *http.Client, query string) (string, string) {
	e.t.Helper()
	code, body, resp := e.get(c, "/_poolgate/"+query)
	if code != http.StatusOK {
		e.t.Fatalf("page: %d %s", code, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "form-action 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		e.t.Fatalf("CSP %q", csp)
	}
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		e.t.Fatalf("no form token on the page:\n%s", body)
	}
	return body, m[1]
}

// post sends a form as the page's buttons do, from origin ("" sends no
// Origin header).
func (e *pageEnv) post(c *http.Client, path, origin string, form url.Values) (int, string, *http.Response) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func (e *pageEnv) hubPaths() []string {
	var out []string
	for _, h := range e.hubs {
		h.mu.Lock()
		out = append(out, h.paths...)
		h.mu.Unlock()
	}
	return out
}

func TestUserPageSignInShowsNodeSessionsKeys(t *testing.T) {
	e := newPageEnv(t, nil)
	l, err := e.bal.Acquire("alice", balancer.SSH, "192.0.2.7:50000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	node := l.Node().Name
	mine, theirs := e.bind("alice", "a"), e.bind("bob", "b")

	c := e.browser()
	e.signIn(c)
	body, _ := e.page(c, "")
	for _, want := range []string{
		"Signed in as Alice Example (alice)",
		"Your node: <strong>" + node + "</strong> (1 session)",
		"<code id=\"ssh\">ssh -p 2222 alice@127.0.0.1</code>",
		`href="/user/alice/"`, "Open JupyterHub",
		"<td>ssh</td><td>" + node + "</td><td>192.0.2.7:50000</td>",
		mine, "ssh-ed25519",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, theirs) {
		t.Error("alice's page shows bob's key")
	}
	// Every other node is offered as a move, not her own.
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		offered := strings.Contains(body, `name="node" value="`+n+`"`)
		if offered == (n == node) {
			t.Errorf("move to %s offered: %v", n, offered)
		}
	}
	found := false
	for _, l := range e.logs.FilterMessage("users' page: signed in").All() {
		m := l.ContextMap()
		found = found || (m["user"] == "alice" && strings.HasPrefix(m["client"].(string), "127.0.0.1:"))
	}
	if !found {
		t.Errorf("no sign-in log line: %v", e.logs.All())
	}
	// The page took no lease, pin or session of its own.
	if len(e.bal.Sessions()) != 1 || len(e.bal.Pins()) != 1 {
		t.Fatalf("sessions %+v pins %+v", e.bal.Sessions(), e.bal.Pins())
	}
	if p := e.hubPaths(); len(p) != 0 {
		t.Fatalf("the page's requests reached a hub: %v", p)
	}
}

func TestUserPageNoNodeYet(t *testing.T) {
	e := newPageEnv(t, func(up *UserPage) { up.SSHAddr = "[::]:22"; up.Bindings = nil })
	c := e.browser()
	e.signIn(c)
	body, _ := e.page(c, "")
	for _, want := range []string{"You have no node yet: your next session goes to the least-loaded node.", `<code id="ssh">ssh alice@127.0.0.1</code>`, `id="sessions">None.`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "Your keys") {
		t.Error("keys shown without bindings")
	}
}

func TestUserPageForgetKey(t *testing.T) {
	e := newPageEnv(t, nil)
	mine, other, theirs := e.bind("alice", "a"), e.bind("alice", "a2"), e.bind("bob", "b")
	c := e.browser()
	e.signIn(c)
	_, token := e.page(c, "")
	code, _, resp := e.post(c, "/_poolgate/keys/forget", e.url, url.Values{"csrf": {token}, "fingerprint": {mine}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/_poolgate/?done=forgot" {
		t.Fatalf("forget: %d to %q", code, resp.Header.Get("Location"))
	}
	// Bob's key cannot be forgotten from alice's session.
	if code, _, _ := e.post(c, "/_poolgate/keys/forget", e.url, url.Values{"csrf": {token}, "fingerprint": {theirs}}); code != http.StatusSeeOther {
		t.Fatalf("forget bob's: %d", code)
	}
	var left []string
	bs, _ := e.keys.List(context.Background())
	for _, b := range bs {
		left = append(left, b.Fingerprint)
	}
	if slices.Contains(left, mine) || !slices.Contains(left, other) || !slices.Contains(left, theirs) {
		t.Fatalf("bindings left %v; want alice's other key and bob's", left)
	}
	body, _ := e.page(c, "?done=forgot")
	if !strings.Contains(body, "The key is forgotten") || strings.Contains(body, mine) {
		t.Fatalf("page after forgetting:\n%s", body)
	}
	if n := e.logs.FilterMessage("users' page: key forgotten").FilterField(zap.String("user", "alice")).Len(); n != 2 {
		t.Fatalf("%d forget log lines, want 2", n)
	}
}

func TestUserPageMove(t *testing.T) {
	e := newPageEnv(t, nil)
	l, _ := e.bal.Acquire("alice", balancer.SSH, "192.0.2.7:50000")
	defer l.Release()
	from := l.Node().Name
	to := "node-1"
	if from == to {
		to = "node-2"
	}
	c := e.browser()
	e.signIn(c)
	_, token := e.page(c, "")
	code, _, resp := e.post(c, "/_poolgate/move", e.url, url.Values{"csrf": {token}, "node": {to}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/_poolgate/?done=moved" {
		t.Fatalf("move: %d to %q", code, resp.Header.Get("Location"))
	}
	for _, p := range []balancer.Protocol{balancer.SSH, balancer.HTTP} {
		if n, ok := e.bal.Pinned("alice", p); !ok || n.Name != to {
			t.Fatalf("alice pinned for %s to %q %v, want %s", p, n.Name, ok, to)
		}
	}
	if pins := e.bal.Pins(); len(pins) != 1 || pins[0].By != balancer.ByUser {
		t.Fatalf("pins %+v, want alice's by user", pins)
	}
	if len(e.bal.Sessions()) != 1 || e.bal.Sessions()[0].Node != from {
		t.Fatal("the session open elsewhere did not go on")
	}
	body, _ := e.page(c, "?done=moved")
	if !strings.Contains(body, "Your next sessions go to "+to+"; sessions open elsewhere go on.") {
		t.Fatalf("page after the move:\n%s", body)
	}
	// Her browser now lands on her new node.
	if _, hub, _ := e.get(c, "/user/alice/tree"); hub != to {
		t.Fatalf("alice's browser went to %s after moving to %s", hub, to)
	}

	// A node she may not choose is refused, with the reason, and
	// nothing moves.
	_ = e.bal.Drain(from)
	for node, reason := range map[string]string{"node-9": "it is not in the pool", from: "it is being drained", "<x>": "that node"} {
		code, body, _ := e.post(c, "/_poolgate/move", e.url, url.Values{"csrf": {token}, "node": {node}})
		if code != http.StatusConflict || !strings.Contains(body, reason) {
			t.Errorf("move to %q: %d, want 409 saying %q:\n%s", node, code, reason, body)
		}
	}
	if n, _ := e.bal.Pinned("alice", balancer.SSH); n.Name != to {
		t.Fatalf("a refused move moved alice to %s", n.Name)
	}
	if e.logs.FilterMessage("users' page: moved").FilterField(zap.String("node", to)).Len() != 1 {
		t.Fatalf("no move log line: %v", e.logs.All())
	}
}

func TestUserPageNoNodeChoice(t *testing.T) {
	e := newPageEnv(t, func(up *UserPage) { up.NoNodeChoice = true })
	c := e.browser()
	e.signIn(c)
	body, token := e.page(c, "")
	if !strings.Contains(body, "Choosing a node is turned off") || strings.Contains(body, `name="node"`) {
		t.Fatalf("page with node choice off:\n%s", body)
	}
	if code, _, _ := e.post(c, "/_poolgate/move", e.url, url.Values{"csrf": {token}, "node": {"node-1"}}); code != http.StatusForbidden {
		t.Fatalf("move with node choice off: %d", code)
	}
	if len(e.bal.Pins()) != 0 {
		t.Fatal("a move was made with node choice off")
	}
}

// TestUserPageRefusesForgedPosts: a state change needs the page's own
// origin and the session's form token.
func TestUserPageRefusesForgedPosts(t *testing.T) {
	e := newPageEnv(t, nil)
	fp := e.bind("alice", "a")
	alice, bob := e.browser(), e.browser()
	e.signIn(alice)
	_, token := e.page(alice, "")
	e.idp.SetUser("bob@example.com", "Bob", "sub-bob")
	e.signIn(bob)
	_, bobToken := e.page(bob, "")
	if bobToken == token {
		t.Fatal("two sessions have one form token")
	}

	for _, tc := range []struct {
		name, origin, token string
		c                   *http.Client
	}{
		{"no token", e.url, "", alice},
		{"wrong token", e.url, flipFirst(token), alice},
		{"another session's token", e.url, bobToken, alice},
		{"foreign origin", "https://evil.example", token, alice},
		{"origin on another port", strings.Replace(e.url, "127.0.0.1:", "127.0.0.1:1", 1), token, alice},
		{"no origin", "", token, alice},
		{"no session", e.url, token, e.browser()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, form := range []struct {
				path string
				v    url.Values
			}{
				{"/_poolgate/keys/forget", url.Values{"csrf": {tc.token}, "fingerprint": {fp}}},
				{"/_poolgate/move", url.Values{"csrf": {tc.token}, "node": {"node-2"}}},
				{"/_poolgate/signout", url.Values{"csrf": {tc.token}}},
			} {
				if code, _, resp := e.post(tc.c, form.path, tc.origin, form.v); code != http.StatusForbidden || len(resp.Cookies()) != 0 {
					t.Errorf("POST %s: %d (cookies %v), want 403", form.path, code, resp.Cookies())
				}
			}
		})
	}
	if b, ok, _ := e.keys.Lookup(context.Background(), fp); !ok || b.User != "alice" {
		t.Fatal("a forged form forgot alice's key")
	}
	if len(e.bal.Pins()) != 0 {
		t.Fatalf("a forged form moved someone: %+v", e.bal.Pins())
	}
	// The genuine sign-out works, and the page asks for a sign-in again.
	if code, _, _ := e.post(alice, "/_poolgate/signout", e.url, url.Values{"csrf": {token}}); code != http.StatusOK {
		t.Fatalf("sign out: %d", code)
	}
	if code, _, resp := e.get(alice, "/_poolgate/"); code != http.StatusSeeOther || resp.Header.Get("Location") != "/_poolgate/signin" {
		t.Fatalf("page after signing out: %d", code)
	}
	if code, _, _ := e.get(alice, "/_poolgate/move"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET move: %d, want 405", code)
	}
}

func TestUserPageFailedSignIn(t *testing.T) {
	e := newPageEnv(t, nil)
	c := e.browser()
	// A callback that no sign-in in this browser began.
	code, body, _ := e.get(c, "/_poolgate/callback?code=x&state=y")
	if code != http.StatusForbidden || !strings.Contains(body, "poolgate: ") || !strings.Contains(body, `href="/_poolgate/signin"`) {
		t.Fatalf("stray callback: %d %s", code, body)
	}
	// The user declines at the provider.
	e.idp.Deny(true)
	_, _, resp := e.get(c, "/_poolgate/signin")
	r, err := c.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	code, body, _ = e.get(c, strings.TrimPrefix(r.Header.Get("Location"), e.url))
	if code != http.StatusForbidden || !strings.Contains(body, "sign-in was declined") {
		t.Fatalf("declined: %d %s", code, body)
	}
	if code, _, _ := e.get(c, "/_poolgate/"); code != http.StatusSeeOther {
		t.Fatalf("page after a failed sign-in: %d, want the sign-in again", code)
	}
}

// TestUserPageNeverProxied: nothing under /_poolgate/, however spelled,
// reaches a hub, with the page on or off; off, it answers 404.
func TestUserPageNeverProxied(t *testing.T) {
	paths := []string{"/_poolgate/", "/_poolgate", "/_poolgate/x", "/_poolgate/hub/login", "/%5Fpoolgate/", "/_poolgate/../_poolgate/", "/_poolgate/%2e%2e/user/alice/", "/hub/../_poolgate/"}
	for _, on := range []bool{true, false} {
		var e *env
		if on {
			e = newPageEnv(t, nil).env
		} else {
			e = newEnv(t, Config{}, false)
		}
		_, _ = e.bal.Acquire("alice", balancer.SSH, "")
		for _, p := range paths {
			req, _ := http.NewRequest("GET", e.url+"/", nil)
			req.URL.Opaque = p // as sent, uncleaned
			req.AddCookie(&http.Cookie{Name: "jupyterhub-user-alice", Value: "v"})
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if !on && resp.StatusCode != http.StatusNotFound {
				t.Errorf("page off: %s answered %d, want 404", p, resp.StatusCode)
			}
		}
		for _, h := range e.hubs {
			h.mu.Lock()
			if len(h.paths) != 0 {
				t.Errorf("page on %v: hub %s got %v", on, h.name, h.paths)
			}
			h.mu.Unlock()
		}
	}
}

// TestUserPageCookiesKeptFromHubs: a user's server never reads the
// page's session (nor the attempt) of a browser that visits it.
func TestUserPageCookiesKeptFromHubs(t *testing.T) {
	e := newPageEnv(t, nil)
	c := e.browser()
	e.signIn(c)
	req, _ := http.NewRequest("GET", e.url+"/user/bob/tree", nil)
	req.AddCookie(&http.Cookie{Name: "poolgate_user_attempt", Value: "a"})
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, h := range e.hubs {
		h.mu.Lock()
		if h.seen != nil {
			if ck := h.seen.Get("Cookie"); strings.Contains(ck, "poolgate_user") {
				t.Errorf("hub %s saw %q", h.name, ck)
			}
		}
		h.mu.Unlock()
	}
}

func TestUserPageOptionsChecked(t *testing.T) {
	idp := identitytest.New(t)
	prov, _ := identity.New(idp.Config(), identity.Options{})
	for name, up := range map[string]*UserPage{
		"short key":    {SignIn: &identity.Web{Provider: prov, Name: "u", Key: []byte("short")}},
		"admin's name": {SignIn: &identity.Web{Provider: prov, Name: AdminCookie, Key: identity.NewWebKey()}},
		"no provider":  {SignIn: &identity.Web{Name: "u", Key: identity.NewWebKey()}},
		"bad ssh addr": {SignIn: &identity.Web{Provider: prov, Name: "u", Key: identity.NewWebKey()}, SSHAddr: "22"},
	} {
		if _, err := New(Config{Listen: "127.0.0.1:0", TLS: boolPtr(false)}, balancer.New(balancer.Config{}, balancer.Options{}), Options{StateDir: t.TempDir(), Users: up}); err == nil {
			t.Errorf("%s: New took it", name)
		}
	}
}

// flipFirst changes a token's first character.
func flipFirst(s string) string {
	if s[0] == 'x' {
		return "y" + s[1:]
	}
	return "x" + s[1:]
}

func TestUserPageRemoteDesktopFile(t *testing.T) {
	var asked []string
	e := newPageEnv(t, func(up *UserPage) {
		up.RDPFile = func(user, gateway string) ([]byte, string, error) {
			asked = append(asked, user+"@"+gateway)
			return []byte("full address:s:pool\r\n"), "id1", nil
		}
	})
	c := e.browser()
	// Not signed in: to the sign-in, no file.
	code, _, _ := e.get(c, "/_poolgate/rdp")
	if code != http.StatusSeeOther && code != http.StatusOK || len(asked) != 0 {
		t.Fatalf("rdp before sign-in: %d, files %v", code, asked)
	}
	e.signIn(c)
	body, _ := e.page(c, "")
	if !strings.Contains(body, `<a id="rdp" href="/_poolgate/rdp" download>Connect with Remote Desktop</a>`) {
		t.Fatalf("no Remote Desktop link:\n%s", body)
	}
	code, file, resp := e.get(c, "/_poolgate/rdp")
	if code != http.StatusOK || file != "full address:s:pool\r\n" || resp.Header.Get("Content-Type") != "application/x-rdp" ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("rdp: %d %q %v", code, file, resp.Header)
	}
	if len(asked) != 1 || !strings.HasPrefix(asked[0], "alice@127.0.0.1:") {
		t.Fatalf("file asked for %v, want alice at the host the browser asked", asked)
	}
}

func TestUserPageNoRemoteDesktopWithoutGateway(t *testing.T) {
	e := newPageEnv(t, nil)
	c := e.browser()
	e.signIn(c)
	if body, _ := e.page(c, ""); strings.Contains(body, "Remote Desktop") {
		t.Fatal("Remote Desktop offered without an RD Gateway")
	}
	if code, _, _ := e.get(c, "/_poolgate/rdp"); code != http.StatusNotFound {
		t.Fatalf("/_poolgate/rdp without a gateway: %d, want 404", code)
	}
}
