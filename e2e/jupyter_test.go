package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/httpgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// browser is a headless Chromium; each session is a fresh browser
// context, with cookies of its own, as a second browser would be.
type browser struct {
	t    *testing.T
	root context.Context
	base string // the gateway's https:// address
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		// The gateway serves its self-signed certificate.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	root, cancelRoot := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelRoot(); cancelAlloc() })
	if err := chromedp.Do(root); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return &browser{t: t, root: root, base: base}
}

type tab struct {
	b   *browser
	ctx context.Context
}

// session opens a tab in a new browser context (no cookies).
func (b *browser) session() *tab {
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("new browser context: %v", err)
	}
	return &tab{b: b, ctx: ctx}
}

func (s *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	s.b.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		s.b.t.Fatalf("%s: %v", what, err)
	}
}

// until evaluates expr until it is true (page loads in between are
// fine), up to d.
func (s *tab) until(what, expr string, d time.Duration) {
	s.b.t.Helper()
	var err error
	done := false
	defer func() {
		if !done {
			loc, _ := chromedp.Run(s.ctx, chromedp.Location())
			body, _ := chromedp.Run(s.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 500) : ""`))
			s.b.t.Logf("%s: last error %v at %s: %q", what, err, loc, body)
		}
	}()
	testutil.Eventually(s.b.t, d, what, func() bool {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		var ok bool
		ok, err = chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		return err == nil && ok
	})
	done = true
}

func (s *tab) text(expr string) string {
	s.b.t.Helper()
	v, err := chromedp.Run(s.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		s.b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return strings.TrimSpace(v)
}

// login signs in on the hub's login page through the gateway and waits
// until the hub has started the user's server and shows its file tree.
func (s *tab) login(user string) {
	s.b.t.Helper()
	s.loginTo(user, "/tree")
}

// loginTo signs in and waits until the browser is at the user's server's
// page land (its default_url).
func (s *tab) loginTo(user, land string) {
	s.b.t.Helper()
	s.do("login page for "+user,
		chromedp.Navigate(s.b.base+"/hub/login"),
		chromedp.WaitVisible(chromedp.CSS("#username_input")),
		chromedp.SendKeys(chromedp.CSS("#username_input"), user),
		chromedp.SendKeys(chromedp.CSS("#password_input"), "any password"),
		chromedp.Click(chromedp.CSS("#login_submit")),
	)
	s.until(user+"'s server started", `location.pathname.startsWith("/user/`+user+land+`") && document.readyState === "complete"`, 90*time.Second)
}

// node reads NODE from the user's home, through the gateway: the name of
// the node whose hub served the request. It fetches from the page, as the
// notebook's own links do (the server refuses /files/ without a Referer).
func (s *tab) node(user string) string {
	s.b.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch("/user/`+user+`/files/NODE").then(async r => r.status === 200 ? await r.text() : "HTTP " + r.status)`, chromedp.EvalAwaitPromise))
	if err != nil {
		s.b.t.Fatalf("fetching %s's NODE: %v", user, err)
	}
	return strings.TrimSpace(v)
}

func (s *tab) screenshot(name string) string {
	s.b.t.Helper()
	png, err := chromedp.Run(s.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.b.t.Fatal(err)
	}
	path := filepath.Join(s.b.t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		s.b.t.Fatal(err)
	}
	if keep := os.Getenv("POOLGATE_SCREENSHOTS"); keep != "" {
		_ = os.WriteFile(filepath.Join(keep, name), png, 0o644)
	}
	return path
}

// TestJupyterHubThroughGateway is the HTTP gateway's acceptance test: three
// real JupyterHubs behind the gateway, a real Chromium in front.
func TestJupyterHubThroughGateway(t *testing.T) {
	requirePeers(t, "chromium", "jupyterhub", "curl")
	p := newPool(t, poolOptions{hubs: true, cfg: func(c *app.Config) {
		// Checks slow enough that a browser sees a stopped hub's 503
		// page before they notice (fall 3 × 1 s).
		c.Health = discovery.HealthConfig{Interval: time.Second, Rise: 1, Fall: 3}
	}})
	base := "https://" + p.gw.HTTPAddr()
	b := newBrowser(t, base)
	httpNode := func(user string) string {
		for _, s := range p.gw.Balancer().Sessions() {
			if s.User == user && s.Protocol == "http" {
				return s.Node
			}
		}
		return ""
	}

	// alice logs in, opens a notebook and runs a cell: its output names
	// the node, which proves the kernel's WebSocket works through the
	// gateway.
	alice := b.session()
	alice.login("alice")
	aliceNode := alice.node("alice")
	if !strings.HasPrefix(aliceNode, "node-") || httpNode("alice") != aliceNode {
		t.Fatalf("alice reads NODE %q; the gateway has her HTTP session on %q", aliceNode, httpNode("alice"))
	}
	alice.do("open the notebook", chromedp.Navigate(base+"/user/alice/notebooks/node.ipynb"))
	alice.until("the kernel connected", `typeof Jupyter !== "undefined" && !!Jupyter.notebook && !!Jupyter.notebook.kernel && Jupyter.notebook.kernel.is_connected()`, 60*time.Second)
	alice.until("the cell ran", `(window.__ran || (window.__ran = (Jupyter.notebook.execute_all_cells(), true))) && !!document.querySelector(".output_subarea pre")`, 60*time.Second)
	out := alice.text(`document.querySelector(".output_subarea pre").innerText`)
	if out != "running on "+aliceNode {
		t.Fatalf("cell output %q, want %q", out, "running on "+aliceNode)
	}
	t.Logf("notebook screenshot: %s", alice.screenshot("jupyter-notebook.png"))

	// bob and carol land on the two other nodes.
	nodes := map[string]string{"alice": aliceNode}
	tabs := map[string]*tab{"alice": alice}
	for _, u := range []string{"bob", "carol"} {
		tabs[u] = b.session()
		tabs[u].login(u)
		nodes[u] = tabs[u].node(u)
	}
	if nodes["alice"] == nodes["bob"] || nodes["bob"] == nodes["carol"] || nodes["alice"] == nodes["carol"] {
		t.Fatalf("alice, bob and carol on %v; want three nodes", nodes)
	}

	// alice's second browser, with fresh cookies, lands on her node.
	alice2 := b.session()
	alice2.login("alice")
	if got := alice2.node("alice"); got != aliceNode {
		t.Fatalf("alice's second browser on %s, want %s", got, aliceNode)
	}
	if n := p.sessionsOf("alice"); n != 1 {
		t.Fatalf("alice has %d sessions with two browsers, want one HTTP session", n)
	}

	// dave has an SSH session on some node; his browser lands there too.
	h := p.hold("dave")
	dave := b.session()
	dave.login("dave")
	if got := dave.node("dave"); got != h.node {
		t.Fatalf("dave's browser on %s, his SSH session on %s", got, h.node)
	}
	h.close()

	t.Run("curl sees forwarded headers and polled health", func(t *testing.T) {
		// The hub honours an absolute ?next= after login only when it
		// names the scheme and host the browser sees, which the hub takes
		// from the first X-Forwarded-Proto and from Host: it then
		// redirects to the path; otherwise it refuses ("Disallowing
		// redirect outside JupyterHub") and sends the user to /hub/spawn.
		// So the gateway must send "https" whatever the client claimed,
		// and keep the browser's Host.
		login := func(target string) string {
			out, err := exec.Command("curl", "-sk", "-D", "-", "-o", "/dev/null", "-H", "X-Forwarded-Proto: http",
				"-H", "X-Forwarded-Host: evil.example", "-H", "X-Forwarded-For: 203.0.113.9",
				"-d", "username=erin&password=x", target+"/hub/login?next="+url.QueryEscape(base+"/hub/home")).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v: %s", err, out)
			}
			return string(out)
		}
		if direct := login("http://" + p.hubs[0].addr); !strings.Contains(strings.ToLower(direct), "\nlocation: /hub/spawn") {
			t.Fatalf("control: straight to the hub, the gateway's URL should be refused as next:\n%s", direct)
		}
		out := login(base)
		if !strings.Contains(strings.ToLower(out), "\nlocation: /hub/home") {
			t.Fatalf("login through the gateway did not honour next=%s/hub/home (the hub did not see https and the browser's Host):\n%s", base, out)
		}
		if !strings.Contains(string(out), httpgw.AffinityCookie+"=") {
			t.Fatalf("no affinity cookie on the login answer:\n%s", out)
		}
		metrics, err := exec.Command("curl", "-s", "http://"+p.gw.AdminAddr()+"/metrics").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range p.nodes {
			if !strings.Contains(string(metrics), `poolgate_health_checks_total{check="hub",node="`+n.name+`",result="ok"}`) {
				t.Fatalf("no ok /hub/health checks counted for %s", n.name)
			}
		}
	})

	t.Run("forged cookie, oversized form and encoded paths", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		get := func(path string, cookies ...*http.Cookie) (*http.Response, string) {
			req, _ := http.NewRequest("GET", base+path, nil)
			u, _ := url.Parse(base + path)
			req.URL.RawPath = u.RawPath
			for _, c := range cookies {
				req.AddCookie(c)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, string(body)
		}
		resp, _ := get("/hub/login", &http.Cookie{Name: httpgw.AffinityCookie, Value: "bm9kZS0x.AAAAAAAAAAAAAAAAAAAAAA"})
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Set-Cookie"), httpgw.AffinityCookie+"=") {
			t.Fatalf("forged affinity cookie: %d, Set-Cookie %q; want the login page and a fresh cookie", resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
		for _, path := range []string{"/user/%2e%2e/", "/user/alice%2Fbob/", "/user/%2e%2e/hub/admin"} {
			resp, body := get(path)
			if resp.StatusCode != 400 || !strings.Contains(body, "names a user") {
				t.Errorf("%s: %d %q", path, resp.StatusCode, body)
			}
		}
		big := "username=alice&password=" + strings.Repeat("x", 70<<10)
		r, err := client.Post(base+"/hub/login", "application/x-www-form-urlencoded", strings.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 413 || !strings.Contains(string(body), "too large") {
			t.Fatalf("oversized login form: %d %q", r.StatusCode, body)
		}
	})

	// carol's hub stops: her browser gets the 503 page; once the health
	// check marks the hub down, her next login and a new user's land
	// elsewhere.
	var carolHub *hub
	for _, hb := range p.hubs {
		if hb.name == nodes["carol"] {
			carolHub = hb
		}
	}
	carolHub.stop()
	carol := tabs["carol"]
	carol.do("reload carol's tree", chromedp.Navigate(base+"/user/carol/tree"))
	// Her request is the first to find the hub gone, and she gets the 503
	// page; or another user's open tab (dave's notebook polls) found it
	// first, the dial failed, the node is gone for browsers (rule 5), and
	// she is already placed elsewhere: her new node's hub asks her to
	// sign in.
	got := carol.text(`document.querySelector("#poolgate-page") ? document.querySelector("#poolgate-page").dataset.status + " " + document.querySelector("h1").innerText : document.body.innerText.slice(0, 300)`)
	switch pinned, _ := p.gw.Balancer().Pinned("carol", balancer.HTTP); {
	case got == "503 Your node is not responding":
		t.Logf("503 page screenshot: %s", carol.screenshot("jupyter-503.png"))
	case strings.HasPrefix(got, "Sign in") && pinned.Name != "" && pinned.Name != carolHub.name:
		t.Logf("another user's request found %s's hub gone first; carol was placed on %s", carolHub.name, pinned.Name)
	default:
		t.Fatalf("carol's browser after her hub stopped shows %q (pinned to %q)", got, pinned.Name)
	}
	p.waitFor("carol's hub marked down", func() bool {
		for _, st := range p.gw.Balancer().Nodes() {
			if st.Name == carolHub.name {
				return st.Check(balancer.HTTP).Checked && !st.Check(balancer.HTTP).Up
			}
		}
		return false
	})
	erin := b.session()
	erin.login("erin")
	if got := erin.node("erin"); got == carolHub.name {
		t.Fatalf("erin landed on %s, whose hub is down", got)
	}
	carol.login("carol")
	if got := carol.node("carol"); got == carolHub.name || got == "" {
		t.Fatalf("carol landed on %q after her hub went down", got)
	}
}
