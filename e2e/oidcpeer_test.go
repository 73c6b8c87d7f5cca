package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"
	"golang.org/x/sys/unix"

	"github.com/poolgate/poolgate/internal/testutil"
)

// The OpenID provider peer: oidc-provider from npm (pinned by
// e2e/oidc/package-lock.json) run by the machine's node, with the device
// flow and its development login pages (any login name and password sign
// in; the name is the account id). See e2e/oidc/provider.mjs.

// oidcDir holds provider.mjs, package.json and the lock file.
const oidcDir = "oidc"

// oidcOptions configures a provider; every field is optional.
type oidcOptions struct {
	// Groups is the groups claim per account id, e.g.
	// {"alice": {"data-science"}}; other accounts get an empty list.
	Groups map[string][]string
	// Overage lists the account ids that get an Entra-style groups
	// overage (_claim_names/_claim_sources) instead of groups; nil means
	// just "overage".
	Overage []string
	// RedirectURIs of the public client "poolgate"; with any, it may use
	// the authorization code flow (PKCE required) besides the device flow.
	RedirectURIs []string
	// DeviceCodeTTL is how long a device code lives (default 10 minutes).
	DeviceCodeTTL time.Duration
	// DeviceInterval, if set, is the poll interval the device
	// authorization answer asks for (the provider sends none, so RFC
	// 8628's 5 s applies; Entra sends 5): a shorter one keeps tests short.
	DeviceInterval time.Duration
	// Host is the listen address, in 127.0.0.0/8 (default 127.0.0.1); the
	// port is always a free one the provider picks.
	Host string
}

// oidcPeer is a running provider.
type oidcPeer struct {
	cmd    *exec.Cmd
	issuer string
	out    testutil.SyncBuffer // stdout: the ready line
	log    testutil.SyncBuffer // stderr: requests and errors
	done   chan struct{}
}

// oidcClientID is the public client the provider registers by default.
const oidcClientID = "poolgate"

var (
	npmOnce sync.Once
	npmErr  error
	npmTook time.Duration
)

// installOIDC runs 'npm ci' in e2e/oidc once per test binary, and not at
// all while node_modules already holds what the lock file names (a stamp
// with the lock's hash is written after a good install). A file lock keeps
// two test binaries of the same tree from installing at once.
func installOIDC() error {
	npmOnce.Do(func() {
		start := time.Now()
		defer func() { npmTook = time.Since(start) }()
		lock, err := os.ReadFile(filepath.Join(oidcDir, "package-lock.json"))
		if err != nil {
			npmErr = err
			return
		}
		sum := sha256.Sum256(lock)
		want := hex.EncodeToString(sum[:])
		stamp := filepath.Join(oidcDir, "node_modules", ".poolgate-lock-sha256")

		lf, err := os.OpenFile(filepath.Join(oidcDir, ".npm-ci.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			npmErr = err
			return
		}
		defer lf.Close()
		if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
			npmErr = err
			return
		}
		defer func() { _ = unix.Flock(int(lf.Fd()), unix.LOCK_UN) }()

		if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		cmd.Dir = oidcDir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			npmErr = fmt.Errorf("npm ci in e2e/%s: %v\n%s", oidcDir, err, out.String())
			return
		}
		npmErr = os.WriteFile(stamp, []byte(want+"\n"), 0o644)
	})
	return npmErr
}

// startOIDC starts a provider and stops it when the test ends. It needs
// node and npm (and root, as every e2e peer here): it fails without them
// in CI, and skips elsewhere.
func startOIDC(t *testing.T, opts oidcOptions) *oidcPeer {
	t.Helper()
	requirePeers(t, "node", "npm")
	if err := installOIDC(); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"host": opts.Host, "groups": opts.Groups, "redirect_uris": opts.RedirectURIs}
	if opts.Host == "" {
		cfg["host"] = "127.0.0.1"
	}
	if opts.Overage != nil {
		cfg["overage"] = opts.Overage
	}
	if opts.DeviceCodeTTL > 0 {
		cfg["deviceCodeTTL"] = int(opts.DeviceCodeTTL / time.Second)
	}
	if opts.DeviceInterval > 0 {
		cfg["deviceInterval"] = int(opts.DeviceInterval / time.Second)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}

	p := &oidcPeer{done: make(chan struct{})}
	p.cmd = exec.Command("node", "provider.mjs")
	p.cmd.Dir = oidcDir
	p.cmd.Env = append(os.Environ(), "OIDC_PEER_CONFIG="+string(js))
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.log
	p.cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting the OpenID provider: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("OpenID provider log (tail):\n%s", tailN(p.log.String(), 4000))
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		if line, ok := readyLine(p.out.String()); ok {
			p.issuer = line
			break
		}
		select {
		case <-p.done:
			t.Fatalf("OpenID provider exited at start (%v):\n%s", p.cmd.ProcessState, tailN(p.log.String(), 4000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("OpenID provider not ready after 30s:\n%s", tailN(p.log.String(), 4000))
		}
	}
	t.Logf("OpenID provider %s ready in %v (pid %d; the npm ci step, once per test binary, took %v)", p.issuer, time.Since(start).Round(time.Millisecond), p.cmd.Process.Pid, npmTook.Round(time.Millisecond))
	return p
}

// readyLine finds "ready ISSUER" in the provider's stdout.
func readyLine(out string) (string, bool) {
	for l := range strings.Lines(out) {
		if iss, ok := strings.CutPrefix(l, "ready "); ok && strings.HasSuffix(iss, "\n") {
			return strings.TrimSpace(iss), true
		}
	}
	return "", false
}

// Issuer is the provider's issuer URL, http://127.0.0.1:PORT (its
// discovery document is at Issuer()+"/.well-known/openid-configuration").
func (p *oidcPeer) Issuer() string { return p.issuer }

// oidcDiscovery is what the tests read of the discovery document.
type oidcDiscovery struct {
	Issuer                      string `json:"issuer"`
	AuthorizationEndpoint       string `json:"authorization_endpoint"`
	TokenEndpoint               string `json:"token_endpoint"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
	JwksURI                     string `json:"jwks_uri"`
}

// Discovery reads the provider's discovery document.
func (p *oidcPeer) Discovery(t *testing.T) oidcDiscovery {
	t.Helper()
	var d oidcDiscovery
	getJSON(t, p.issuer+"/.well-known/openid-configuration", &d)
	if d.Issuer != p.issuer {
		t.Fatalf("discovery names issuer %q, want %q", d.Issuer, p.issuer)
	}
	return d
}

// OAuth2Config is the public client "poolgate" as x/oauth2 sees it, with
// scopes openid, profile and email, and redirectURL (may be empty).
func (p *oidcPeer) OAuth2Config(t *testing.T, redirectURL string) *oauth2.Config {
	t.Helper()
	d := p.Discovery(t)
	return &oauth2.Config{
		ClientID: oidcClientID,
		Endpoint: oauth2.Endpoint{
			AuthURL: d.AuthorizationEndpoint, TokenURL: d.TokenEndpoint,
			DeviceAuthURL: d.DeviceAuthorizationEndpoint, AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: redirectURL,
		Scopes:      []string{"openid", "profile", "email"},
	}
}

// Log is what the provider has logged so far (one line per request).
func (p *oidcPeer) Log() string { return p.log.String() }

// Stop ends the provider (SIGTERM, then SIGKILL after 5 s) and waits for
// it: a test stops it to see the gateway cope with a provider that is
// gone. Safe to call more than once.
func (p *oidcPeer) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // if paused
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Pause stops the provider with SIGSTOP: the kernel still accepts
// connections on its port, and nothing answers, as with a provider that
// hangs. Resume (or Stop) lets it go on.
func (p *oidcPeer) Pause() { _ = p.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused provider.
func (p *oidcPeer) Resume() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }

// approveDevice plays the user of RFC 8628 in a real Chromium: on a fresh
// browser context (no cookies) inside ctx, a context of newBrowser's, it
// opens verificationURL (verification_uri or verification_uri_complete),
// enters userCode, confirms the device, signs in on the development login
// page as login (any password), and then either grants consent (approve)
// or cancels on the consent page, after signing in, as a user who declines
// does. It waits for the provider's closing page: "Sign-in Success" when
// approved, the code page saying the sign-in was interrupted when not.
func approveDevice(t *testing.T, ctx context.Context, verificationURL, userCode, login string, approve bool) {
	t.Helper()
	s := (&browser{t: t, root: ctx}).session()
	loopbackOnly(t, s.ctx)
	const input, confirm = `form[id="op.deviceInputForm"] input[name="user_code"]`, `button[form="op.deviceConfirmForm"][autofocus]`
	s.do("device page "+verificationURL, chromedp.Navigate(verificationURL))
	// verification_uri asks for the code; verification_uri_complete posts
	// it by itself and lands on the confirmation.
	s.until("the code or confirmation page", fmt.Sprintf(`!!document.querySelector(%q) || !!document.querySelector(%q)`, input, confirm), 30*time.Second)
	if s.text(fmt.Sprintf(`document.querySelector(%q) ? "input" : ""`, input)) == "input" {
		if userCode == "" {
			t.Fatalf("%s asks for the user code, and none was given", verificationURL)
		}
		s.do("enter the user code",
			chromedp.SetValue(chromedp.CSS(input), userCode),
			chromedp.Click(chromedp.CSS(`button[form="op.deviceInputForm"]`)),
		)
	}
	s.do("confirm the device",
		chromedp.WaitVisible(chromedp.CSS(confirm)),
		chromedp.Click(chromedp.CSS(confirm)),
	)
	s.signInAtProvider(login, approve)
	if approve {
		s.until("the device sign-in to succeed", `document.title === "Sign-in Success"`, 30*time.Second)
		return
	}
	s.until("the device sign-in to be declined", `document.body.innerText.includes("The Sign-in request was interrupted")`, 30*time.Second)
}

// signInAtProvider fills the provider's development login page, which the
// tab is on or about to load, as login (any password is accepted), then
// on the consent page grants (approve) or cancels ("[ Cancel ]", which
// ends the request with access_denied).
func (s *tab) signInAtProvider(login string, approve bool) {
	s.b.t.Helper()
	s.do("sign in as "+login,
		chromedp.WaitReady(chromedp.CSS(`input[name="prompt"][value="login"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="login"]`), login),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), "any password"),
		chromedp.Click(chromedp.CSS(`button.login-submit`)),
	)
	s.until("the consent page", `!!document.querySelector('input[name="prompt"][value="consent"]')`, 30*time.Second)
	if approve {
		s.do("consent", chromedp.Click(chromedp.CSS(`button.login-submit`)))
	} else {
		s.do("decline", chromedp.Click(chromedp.CSS(`a[href$="/abort"]`)))
	}
}

// browserLogin plays the user of the authorization code flow in a real
// Chromium: on a fresh browser context inside ctx (newBrowser's), it
// opens startURL (the provider's authorization URL, or a page of the
// gateway that redirects there), signs in at the provider as login and
// grants or declines consent, and returns the first URL starting with
// landPrefix that the browser reaches (the redirect_uri with code, state
// and iss, or error=access_denied when declined), with the tab still on
// it for more steps.
func browserLogin(t *testing.T, ctx context.Context, startURL, landPrefix, login string, approve bool) (*url.URL, *tab) {
	t.Helper()
	s := (&browser{t: t, root: ctx}).session()
	loopbackOnly(t, s.ctx)
	var mu sync.Mutex
	var landed string
	if err := chromedp.Listen(s.ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && strings.HasPrefix(e.Request.URL, landPrefix) {
			mu.Lock()
			if landed == "" {
				landed = e.Request.URL
			}
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	s.do("open "+startURL, chromedp.Navigate(startURL))
	s.signInAtProvider(login, approve)
	testutil.Eventually(t, 30*time.Second, "the browser to reach "+landPrefix, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return landed != ""
	})
	mu.Lock()
	defer mu.Unlock()
	u, err := url.Parse(landed)
	if err != nil {
		t.Fatal(err)
	}
	return u, s
}

// loopbackOnly records every request a tab makes and fails the test at
// its end if one left 127.0.0.0/8.
func loopbackOnly(t *testing.T, ctx context.Context) {
	t.Helper()
	var mu sync.Mutex
	var away []string
	seen := 0
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			seen++
			mu.Unlock()
			u, err := url.Parse(e.Request.URL)
			if err != nil || (u.Scheme != "data" && !strings.HasPrefix(u.Hostname(), "127.")) {
				mu.Lock()
				away = append(away, e.Request.URL)
				mu.Unlock()
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(away) > 0 {
			t.Errorf("the browser left loopback: %q", away)
		}
		if seen == 0 && !t.Failed() {
			t.Errorf("no request of the browser's was seen: the loopback check saw nothing")
		}
	})
}

// TestOIDCPeerDeviceFlow proves the OpenID provider peer on its own, with
// golang.org/x/oauth2 as the device and Chromium as the user: an approved
// sign-in yields an RS256 ID token with the claims the gateway reads, a
// declined one access_denied, and an account with too many groups the
// Entra-style overage.
func TestOIDCPeerDeviceFlow(t *testing.T) {
	requirePeers(t, "chromium")
	t.Cleanup(func() { reapOrphans(t) }) // runs last: Chromium's helpers outlive it
	p := startOIDC(t, oidcOptions{Groups: map[string][]string{"alice": {"data-science"}, "carol": {"finance"}}})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	disc := p.Discovery(t)
	cfg := p.OAuth2Config(t, "")
	b := newBrowser(t, "")

	// Alice approves, typing the code on the verification page.
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device authorization: user_code %s, verification_uri %s, verification_uri_complete %s, interval %d, expires in %v",
		da.UserCode, da.VerificationURI, da.VerificationURIComplete, da.Interval, time.Until(da.Expiry).Round(time.Second))
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(da.UserCode) || da.VerificationURI != p.Issuer()+"/device" {
		t.Errorf("device authorization %+v", da)
	}
	if e := pollOnce(t, cfg, da.DeviceCode); e != "authorization_pending" {
		t.Errorf("a poll before the user acts: %q, want authorization_pending", e)
	}
	start := time.Now()
	approveDevice(t, b.root, da.VerificationURI, da.UserCode, "alice", true)
	t.Logf("approving in Chromium took %v", time.Since(start).Round(time.Millisecond))
	// The provider sends no interval (so RFC 8628's 5 s applies) and never
	// answers slow_down; 1 s keeps the test short.
	da.Interval = 1
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	claims := verifyIDToken(t, disc.JwksURI, tok)
	if claims["iss"] != p.Issuer() || claims["aud"] != oidcClientID || claims["sub"] != "alice" ||
		claims["preferred_username"] != "alice@example.test" || claims["email"] != "alice@example.test" ||
		fmt.Sprint(claims["groups"]) != "[data-science]" {
		t.Errorf("alice's ID token claims %v", claims)
	}
	if e := pollOnce(t, cfg, da.DeviceCode); e != "invalid_grant" {
		t.Errorf("a poll after the token was issued: %q, want invalid_grant", e)
	}

	// Carol signs in and declines.
	da, err = cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	approveDevice(t, b.root, da.VerificationURI, da.UserCode, "carol", false)
	da.Interval = 1
	_, err = cfg.DeviceAccessToken(ctx, da)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "access_denied" {
		t.Fatalf("declined: %v, want access_denied", err)
	}
	t.Logf("declined: %q %q", re.ErrorCode, re.ErrorDescription)

	// An account in too many groups, through verification_uri_complete
	// (the code already filled in).
	da, err = cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	approveDevice(t, b.root, da.VerificationURIComplete, "", "overage", true)
	da.Interval = 1
	tok, err = cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	claims = verifyIDToken(t, disc.JwksURI, tok)
	names, _ := claims["_claim_names"].(map[string]any)
	if _, has := claims["groups"]; has || names["groups"] == nil || claims["_claim_sources"] == nil {
		t.Errorf("overage's ID token claims %v, want _claim_names.groups and no groups", claims)
	}

	// Paused, the provider hangs; resumed, it answers; stopped, its port
	// refuses.
	short := &http.Client{Timeout: time.Second}
	discovery := p.Issuer() + "/.well-known/openid-configuration"
	p.Pause()
	if resp, err := short.Get(discovery); err == nil {
		resp.Body.Close()
		t.Error("a paused provider answered")
	}
	p.Resume()
	resp, err := short.Get(discovery)
	if err != nil {
		t.Fatalf("resumed provider: %v", err)
	}
	resp.Body.Close()
	start = time.Now()
	p.Stop()
	t.Logf("stopping the provider took %v", time.Since(start).Round(time.Millisecond))
	if resp, err := short.Get(discovery); err == nil {
		resp.Body.Close()
		t.Error("a stopped provider answered")
	} else {
		t.Logf("stopped provider: %v", err)
	}
}

// pollOnce asks the token endpoint once for the device code's token and
// returns the error code ("" when it issued one).
func pollOnce(t *testing.T, cfg *oauth2.Config, deviceCode string) string {
	t.Helper()
	resp, err := http.PostForm(cfg.Endpoint.TokenURL, url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {deviceCode}, "client_id": {cfg.ClientID},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return body.Error
}

// verifyIDToken checks the token's id_token signature (RS256) against the
// provider's JWKS and returns its claims.
func verifyIDToken(t *testing.T, jwksURI string, tok *oauth2.Token) map[string]any {
	t.Helper()
	raw, _ := tok.Extra("id_token").(string)
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("no id_token in %v", tok)
	}
	var hdr struct{ Alg, Kid string }
	var claims map[string]any
	for i, dst := range []any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err == nil {
			err = json.Unmarshal(b, dst)
		}
		if err != nil {
			t.Fatalf("id_token part %d: %v", i, err)
		}
	}
	if hdr.Alg != "RS256" {
		t.Fatalf("id_token alg %q, want RS256", hdr.Alg)
	}
	resp, err := http.Get(jwksURI)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks struct {
		Keys []struct{ Kid, Kty, N, E string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	for _, k := range jwks.Keys {
		if k.Kid != hdr.Kid || k.Kty != "RSA" {
			continue
		}
		n, _ := base64.RawURLEncoding.DecodeString(k.N)
		e, _ := base64.RawURLEncoding.DecodeString(k.E)
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
			t.Fatalf("id_token signature: %v", err)
		}
		return claims
	}
	t.Fatalf("no key %q in %s", hdr.Kid, jwksURI)
	return nil
}

// TestOIDCPeerAuthCode proves the provider's authorization code flow
// with PKCE, as the browser sign-in will use it: Chromium signs in and
// lands on the redirect URI with code, state and iss; the code and the
// verifier give an ID token carrying the nonce; a request without PKCE is
// refused before any login, and a declined consent comes back as
// error=access_denied.
func TestOIDCPeerAuthCode(t *testing.T) {
	requirePeers(t, "chromium")
	t.Cleanup(func() { reapOrphans(t) }) // runs last: Chromium's helpers outlive it
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "callback")
	}))
	t.Cleanup(cb.Close)
	redirect := cb.URL + "/callback"
	p := startOIDC(t, oidcOptions{RedirectURIs: []string{redirect}, Groups: map[string][]string{"alice": {"data-science"}}})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := p.OAuth2Config(t, redirect)
	disc := p.Discovery(t)

	// Without a code_challenge the provider sends the browser back with
	// an error, and no login page.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(cfg.AuthCodeURL("s0"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), redirect) || loc.Query().Get("error") != "invalid_request" {
		t.Errorf("authorization without PKCE: %s to %s, want 303 to the redirect URI with error=invalid_request", resp.Status, loc)
	}
	t.Logf("without PKCE: %s %q", loc.Query().Get("error"), loc.Query().Get("error_description"))

	b := newBrowser(t, "")
	verifier := oauth2.GenerateVerifier()
	start := time.Now()
	u, _ := browserLogin(t, b.root, cfg.AuthCodeURL("s1", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "n1")), redirect, "alice", true)
	t.Logf("signing in in Chromium took %v; landed on %s", time.Since(start).Round(time.Millisecond), u)
	q := u.Query()
	if q.Get("state") != "s1" || q.Get("iss") != p.Issuer() || q.Get("code") == "" {
		t.Fatalf("callback %s, want state s1, iss and code", u)
	}
	// A wrong verifier is refused, and does not use the code up (the
	// provider checks PKCE before it consumes the code).
	_, err = cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	if re := (*oauth2.RetrieveError)(nil); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("exchange with a wrong verifier: %v, want invalid_grant", err)
	} else {
		t.Logf("wrong verifier: %q %q", re.ErrorCode, re.ErrorDescription)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	claims := verifyIDToken(t, disc.JwksURI, tok)
	if claims["nonce"] != "n1" || claims["sub"] != "alice" || claims["preferred_username"] != "alice@example.test" || fmt.Sprint(claims["groups"]) != "[data-science]" {
		t.Errorf("ID token claims %v", claims)
	}

	// Carol declines.
	u, _ = browserLogin(t, b.root, cfg.AuthCodeURL("s3", oauth2.S256ChallengeOption(verifier)), redirect, "carol", false)
	if q := u.Query(); q.Get("error") != "access_denied" || q.Get("state") != "s3" {
		t.Errorf("declined: callback %s, want error=access_denied and state s3", u)
	}
}

// TestOIDCPeerDeviceCodeExpires: with a short device code lifetime the
// provider answers expired_token once it has passed, while x/oauth2's
// DeviceAccessToken gives up at expires_in on its own, with the context's
// deadline error, and never sees that answer.
func TestOIDCPeerDeviceCodeExpires(t *testing.T) {
	p := startOIDC(t, oidcOptions{DeviceCodeTTL: 2 * time.Second})
	cfg := p.OAuth2Config(t, "")
	da, err := cfg.DeviceAuth(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(da.Expiry); d <= 0 || d > 2*time.Second {
		t.Errorf("expires in %v, want 2s", d)
	}
	da.Interval = 1
	_, err = cfg.DeviceAccessToken(t.Context(), da)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DeviceAccessToken past expires_in: %v, want the context's deadline", err)
	}
	time.Sleep(time.Until(da.Expiry) + time.Second)
	if e := pollOnce(t, cfg, da.DeviceCode); e != "expired_token" {
		t.Errorf("a poll after the code expired: %q, want expired_token", e)
	}
}
