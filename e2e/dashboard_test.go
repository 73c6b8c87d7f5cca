package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestDashboardInBrowser: a real headless Chromium signs in to the
// dashboard, sees every node, watches a count change when a session
// opens, drains a node with the write token, and leaves screenshots.
func TestDashboardInBrowser(t *testing.T) {
	requirePeers(t, "chromium")
	dir := t.TempDir()
	const writeToken = "dashboard-write-token-0123456789"
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(writeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, poolOptions{cfg: func(c *app.Config) { c.Admin.TokenFile = tokFile }})
	url := "http://" + p.gw.AdminAddr() + "/"

	// The first call starts the browser (newBrowser); its context must not
	// time out (chromedp), so the deadline goes on a child.
	ctx := newBrowser(t, "").root
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// text reads an element's text in one step inside the page: the
	// dashboard replaces its rows on every poll, so a node looked up first
	// and read afterwards may be gone in between.
	text := func(sel string) string {
		t.Helper()
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : ""; })()`, sel)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	cellOf := func(node, class string) string { return text(`tr[data-node="` + node + `"] td.` + class) }
	waitCell := func(node, class, want string) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, fmt.Sprintf("%s of %s to be %q", class, node, want), func() bool { return cellOf(node, class) == want })
	}

	// Without a token: the sign-in form. With it: the dashboard.
	run("sign in",
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), writeToken),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-node="node-3"]`)),
	)
	for _, n := range p.nodes {
		waitCell(n.name, "ssh", "0")
	}

	// A session opens: its node's count changes without a reload.
	h := p.hold("alice")
	waitCell(h.node, "ssh", "1")
	if users := cellOf(h.node, "users"); !strings.Contains(users, "alice") {
		t.Fatalf("users of %s: %q", h.node, cellOf(h.node, "users"))
	}

	// Drain it with the button.
	run("drain", chromedp.Click(chromedp.CSS(`tr[data-node="`+h.node+`"] button[data-action="drain"]`)))
	testutil.Eventually(t, 20*time.Second, "the state of "+h.node+" to be draining after clicking drain", func() bool {
		return text(`tr[data-node="`+h.node+`"] .state`) == "draining"
	})
	for _, st := range p.gw.Balancer().Nodes() {
		if st.Name == h.node && st.State != "draining" {
			t.Fatalf("the gateway says %s is %s after the click", h.node, st.State)
		}
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	// And on a phone-sized screen.
	run("phone viewport", chromedp.EmulateViewport(390, 844), chromedp.Sleep(300*time.Millisecond))
	if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	}
	phone := filepath.Join(filepath.Dir(shot), "dashboard-phone.png")
	if err := os.WriteFile(phone, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s, %s", shot, phone)
	if keep := os.Getenv("POOLGATE_SCREENSHOTS"); keep != "" { // for a look by hand
		_ = os.WriteFile(filepath.Join(keep, "dashboard.png"), mustRead(t, shot), 0o644)
		_ = os.WriteFile(filepath.Join(keep, "dashboard-phone.png"), png, 0o644)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
