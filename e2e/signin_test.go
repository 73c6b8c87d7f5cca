package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/identity"
	"github.com/poolgate/poolgate/gateway/sshgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// The acceptance checks of issue 23 (sign in with Entra ID, here any OIDC
// provider): the real OpenSSH client against a real OpenID provider
// (oidc-provider from npm), with headless Chromium as the user's browser.

// signingIn is one ssh run waiting on a sign-in.
type signingIn struct {
	cmd    *exec.Cmd
	stderr testutil.SyncBuffer
	stdout testutil.SyncBuffer
	done   chan struct{}
	code   int
}

// sshSignIn starts ssh as user with key, running command; the caller
// completes the sign-in the prompt asks for.
func (p *pool) sshSignIn(t *testing.T, user, key, command string) *signingIn {
	t.Helper()
	args := append(clientArgs(p.dir, key, p.entry, "-p"), "-o", "PreferredAuthentications=publickey,keyboard-interactive", user+"@127.0.0.1", command)
	s := &signingIn{cmd: exec.Command("ssh", args...), done: make(chan struct{})}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		s.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			s.code = ee.ExitCode()
		} else if err != nil {
			s.code = -1
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

var deviceLine = regexp.MustCompile(`(https?://127\.0\.0\.1:\d+/device)\S*.*?code ([A-Z]{4}-[A-Z]{4})`)

// prompt waits for the provider's words and returns the page and the code.
func (s *signingIn) prompt(t *testing.T) (page, code string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "ssh to show the sign-in prompt", func() bool {
		return deviceLine.MatchString(s.stderr.String()) || s.ended()
	})
	m := deviceLine.FindStringSubmatch(s.stderr.String())
	if m == nil {
		t.Fatalf("ssh ended (%d) without a sign-in prompt: %q", s.code, s.stderr.String())
	}
	return m[1], m[2]
}

func (s *signingIn) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// wait waits for ssh to end and returns its exit status.
func (s *signingIn) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
		return s.code
	case <-time.After(d):
		t.Fatalf("ssh did not end within %v: %q", d, s.stderr.String())
		return -1
	}
}

// newKey makes a fresh client key in dir.
func newKey(t *testing.T, dir, name string) string {
	t.Helper()
	k := filepath.Join(dir, name)
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", k)
	return k
}

// TestSignInWithIdentityProvider: dave has no authorized_keys file. His
// first ssh shows the provider's prompt and waits; he signs in in a
// browser and lands on a node. The key his client offered is bound: ssh
// and scp with it go straight in until identity.key_ttl, then he signs in
// again. A login name that is not the signed-in user's, a user outside
// allowed_groups, a declined sign-in and a stopped provider each get
// their line. Ops see and revoke bindings, and sign in to the dashboard
// with the same provider.
func TestSignInWithIdentityProvider(t *testing.T) {
	requirePeers(t, "chromium")
	t.Cleanup(func() { reapOrphans(t) })
	adminAddr, httpAddr := freePort(t), freePort(t)
	adminURL, httpURL := "http://"+adminAddr, "https://"+httpAddr
	op := startOIDC(t, oidcOptions{
		Groups:       map[string][]string{"dave": {"data-science", "pool-ops"}, "erin": {"data-science"}, "frank": {"finance"}, "zed": {"data-science"}},
		RedirectURIs: []string{adminURL + "/_poolgate/callback", httpURL + "/_poolgate/callback"},
		// The gateway polls as often as the provider asks.
		DeviceInterval: time.Second,
	})
	keyDir := filepath.Join(t.TempDir(), "keys")
	if err := os.MkdirAll(filepath.Join(keyDir, "alice"), 0o755); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	const token = "e2e-admin-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const ttl = 12 * time.Second
	p := newPool(t, poolOptions{nodes: 2, cfg: func(c *app.Config) {
		// Only alice has a file; everyone else signs in.
		c.SSH.AuthorizedKeys = sshgw.KeysTemplate(filepath.Join(keyDir, "{user}", "authorized_keys"))
		c.Admin.Listen, c.Admin.TokenFile = adminAddr, tokenFile
		// The HTTP front end, for the users' page (no hubs here).
		c.HTTP.Listen = httpAddr
		c.Identity = identity.Config{
			OIDC:          identity.OIDCConfig{Issuer: op.Issuer(), ClientID: oidcClientID},
			KeyTTL:        ttl,
			AllowedGroups: []string{"data-science"},
			OpsGroups:     []string{"pool-ops"},
			// This test starts more sign-ins from 127.0.0.1 in a
			// minute than one address may (5).
			DeviceLimit: identity.DeviceLimit{PerAddress: 30},
		}.WithDefaults()
		// Every client here is 127.0.0.1: the refusals below would
		// otherwise slow its later logins down (a real feature, tested
		// elsewhere).
		c.SSH.AuthBackoff.After = 1000
	}})
	pub, _ := os.ReadFile(p.key + ".pub")
	if err := os.WriteFile(filepath.Join(keyDir, "alice", "authorized_keys"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, "")
	ctx := b.root
	bin := buildPoolgate(t)

	// 1. dave's first ssh: the prompt, nothing taken while he signs in.
	daveKey := newKey(t, t.TempDir(), "dave_key")
	s := p.sshSignIn(t, "dave", daveKey, "echo node=$DSVM_NODE user=$(id -un)")
	page, code := s.prompt(t)
	if !strings.Contains(s.stderr.String(), "To sign in, use a web browser to open the page") && !strings.Contains(s.stderr.String(), page) {
		t.Errorf("the prompt does not say where to sign in: %q", s.stderr.String())
	}
	if n := len(p.gw.Balancer().Sessions()); n != 0 {
		t.Fatalf("a sign-in under way holds %d sessions", n)
	}
	approveDevice(t, ctx, page, code, "dave", true)
	if c := s.wait(t, time.Minute); c != 0 || !regexp.MustCompile(`node=node-\d user=dave`).MatchString(s.stdout.String()) {
		t.Fatalf("dave after signing in: exit %d, out %q, err %q", c, s.stdout.String(), s.stderr.String())
	}
	t.Logf("dave signed in: %s", strings.TrimSpace(s.stdout.String()))

	// 2. The same key goes straight in: ssh in batch mode, scp.
	args := append(clientArgs(p.dir, daveKey, p.entry, "-p"), "-o", "BatchMode=yes", "dave@127.0.0.1", "id -un")
	if out, errs, c := p.runClient("ssh", args, nil); c != 0 || strings.TrimSpace(out) != "dave" {
		t.Fatalf("dave's bound key: exit %d, out %q, err %q", c, out, errs)
	}
	src := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(src, []byte("signed in once\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scpArgs := append(clientArgs(p.dir, daveKey, p.entry, "-P"), "-o", "BatchMode=yes", src, "dave@127.0.0.1:/tmp/e2e-signin-notes.txt")
	if _, errs, c := p.runClient("scp", scpArgs, nil); c != 0 {
		t.Fatalf("scp with dave's bound key: exit %d, %q", c, errs)
	}

	// 3. Ops see the binding.
	var ids admin.IdentitiesJSON
	adminGet(t, adminURL+"/api/identities", token, &ids)
	if len(ids.Identities) != 1 || ids.Identities[0].User != "dave" || ids.Identities[0].Subject != "dave" || !strings.HasPrefix(ids.Identities[0].Fingerprint, "SHA256:") {
		t.Fatalf("GET /api/identities: %+v", ids)
	}
	out, errs, c := p.runClient(bin, []string{"identities", "--admin", adminURL, "--token", token}, nil)
	if c != 0 || !regexp.MustCompile(`dave\s+SHA256:\S+\s+ssh-ed25519`).MatchString(out) {
		t.Fatalf("poolgate identities: %d %q %q", c, out, errs)
	}

	// 3b. The users' page: dave signs in with the browser, sees his node
	// and his key, moves himself to the other node, and forgets the key.
	_, ut := browserLogin(t, ctx, httpURL+"/_poolgate/", httpURL+"/_poolgate/callback", "dave", true)
	ut.until("dave's page", `!!document.querySelector("#who") && document.querySelector("#who").innerText.includes("(dave)")`, 30*time.Second)
	first := regexp.MustCompile(`node=(node-\d)`).FindStringSubmatch(s.stdout.String())[1]
	other := map[string]string{"node-1": "node-2", "node-2": "node-1"}[first]
	if got := ut.text(`document.querySelector("#node").innerText`); !strings.Contains(got, first) {
		t.Errorf("dave's page names his node as %q, want %s", got, first)
	}
	if got := ut.text(`document.querySelector("#keys").innerText`); !strings.Contains(got, ids.Identities[0].Fingerprint) {
		t.Errorf("dave's page lists keys %q, want %s", got, ids.Identities[0].Fingerprint)
	}
	if got := ut.text(`document.querySelector("#ssh").innerText`); !strings.Contains(got, "dave@") {
		t.Errorf("dave's page gives the ssh command %q", got)
	}
	ut.do("move to "+other, chromedp.Click(chromedp.CSS(fmt.Sprintf(`form[action="/_poolgate/move"]:has(input[name="node"][value=%q]) button`, other))))
	ut.until("the move's notice", fmt.Sprintf(`!!document.querySelector("#notice") && document.querySelector("#notice").innerText.includes("Your next sessions go to %s")`, other), 30*time.Second)
	args = append(clientArgs(p.dir, daveKey, p.entry, "-p"), "-o", "BatchMode=yes", "dave@127.0.0.1", "echo $DSVM_NODE")
	if out, errs, c := p.runClient("ssh", args, nil); c != 0 || strings.TrimSpace(out) != other {
		t.Fatalf("dave after moving himself to %s from the page: exit %d, on %q, %q", other, c, out, errs)
	}
	ut.do("forget the key", chromedp.Click(chromedp.CSS(`form[action="/_poolgate/keys/forget"] button`)))
	ut.until("no key left", `!!document.querySelector("#keys") && document.querySelector("#keys").innerText.includes("No key is bound to you")`, 30*time.Second)
	args = append(clientArgs(p.dir, daveKey, p.entry, "-p"), "-o", "BatchMode=yes", "-o", "PreferredAuthentications=publickey", "dave@127.0.0.1", "true")
	if _, _, c := p.runClient("ssh", args, nil); c == 0 {
		t.Fatal("dave's forgotten key still logs in by itself")
	}
	// Sign in again for what follows.
	s = p.sshSignIn(t, "dave", daveKey, "true")
	page, code = s.prompt(t)
	approveDevice(t, ctx, page, code, "dave", true)
	if c := s.wait(t, time.Minute); c != 0 {
		t.Fatalf("dave signing in again after forgetting his key: exit %d, %q", c, s.stderr.String())
	}
	bound := time.Now()

	// 4. Another login name with dave's sign-in; a user outside the
	// allowed groups; a declined sign-in.
	for _, tc := range []struct {
		login, as string
		approve   bool
		want      string
	}{
		{"erin", "dave", true, "signed in as dave, which is not the login name erin"},
		{"frank", "frank", true, "frank is not in a group allowed to use this pool"},
		{"erin", "erin", false, "sign-in was declined"},
		// zed signs in, but the nodes have no such account.
		{"zed", "zed", true, "refused the login for zed"},
	} {
		s := p.sshSignIn(t, tc.login, newKey(t, t.TempDir(), tc.login+"_key"), "true")
		page, code := s.prompt(t)
		approveDevice(t, ctx, page, code, tc.as, tc.approve)
		if c := s.wait(t, time.Minute); c != 255 || !strings.Contains(s.stderr.String(), "poolgate: ") || !strings.Contains(s.stderr.String(), tc.want) {
			t.Errorf("ssh %s signed in as %s (approve %v): exit %d, %q; want 255 and %q", tc.login, tc.as, tc.approve, c, s.stderr.String(), tc.want)
		}
		if n := strings.Count(s.stderr.String(), "enter the code"); n > 1 {
			t.Errorf("ssh %s was shown %d codes; a refusal should end the sign-in", tc.login, n)
		}
	}
	if n := len(p.gw.Balancer().Sessions()); n != 0 {
		t.Errorf("refused sign-ins left %d sessions", n)
	}

	// 5. The dashboard: an operator signs in with the provider; someone
	// outside ops_groups is told why not.
	resp, err := http.Get(adminURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `id="signin"`) || strings.Contains(string(body), `name="token"`) {
		t.Fatalf("the dashboard without a session: %s, want the organisation's sign-in instead of the token form:\n%s", resp.Status, body)
	}
	_, tab := browserLogin(t, ctx, adminURL+"/_poolgate/signin", adminURL+"/_poolgate/callback", "dave", true)
	tab.until("the dashboard after dave's sign-in", `!!document.querySelector("#nodes") && document.querySelector("#nodes").rows.length > 0`, 30*time.Second)
	_, tab = browserLogin(t, ctx, adminURL+"/_poolgate/signin", adminURL+"/_poolgate/callback", "erin", true)
	tab.until("erin's refusal", `document.body.innerText.includes("erin is signed in, but is not in a group of identity.ops_groups")`, 30*time.Second)
	_, tab = browserLogin(t, ctx, adminURL+"/_poolgate/signin", adminURL+"/_poolgate/callback", "frank", true)
	tab.until("frank's refusal", `document.body.innerText.includes("frank is not in a group allowed to use this pool")`, 30*time.Second)

	// 6. Past key_ttl the key signs in again; revoke does it at once.
	time.Sleep(time.Until(bound.Add(ttl)))
	s = p.sshSignIn(t, "dave", daveKey, "true")
	page, code = s.prompt(t)
	approveDevice(t, ctx, page, code, "dave", true)
	if c := s.wait(t, time.Minute); c != 0 {
		t.Fatalf("dave signing in again after key_ttl: exit %d, %q", c, s.stderr.String())
	}
	out, errs, c = p.runClient(bin, []string{"identity", "revoke", "--admin", adminURL, "--token", token, "dave"}, nil)
	if c != 0 || !strings.Contains(out, "dave: 1 bound keys forgotten") {
		t.Fatalf("poolgate identity revoke dave: %d %q %q", c, out, errs)
	}
	s = p.sshSignIn(t, "dave", daveKey, "true")
	s.prompt(t) // asked again at once
	_ = s.cmd.Process.Kill()

	// 7. The provider stopped: one line, at once, and key users go on.
	op.Stop()
	start := time.Now()
	s = p.sshSignIn(t, "dave", daveKey, "true")
	if c := s.wait(t, time.Minute); c != 255 || !strings.Contains(s.stderr.String(), "poolgate: the identity provider cannot be reached") {
		t.Errorf("with the provider stopped: exit %d, %q", c, s.stderr.String())
	}
	t.Logf("refused with the provider stopped in %v", time.Since(start).Round(time.Millisecond))
	args = append(p.sshArgs("-p"), "-o", "BatchMode=yes", "alice@127.0.0.1", "id -un")
	if out, errs, c := p.runClient("ssh", args, nil); c != 0 || strings.TrimSpace(out) != "alice" {
		t.Fatalf("alice's key with the provider stopped: exit %d, %q %q", c, out, errs)
	}
}

// adminGet reads a JSON answer of the admin API.
func adminGet(t *testing.T, url, token string, out any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(fmt.Errorf("GET %s: %w", url, err))
	}
}
