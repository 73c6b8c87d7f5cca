package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
)

// TestOneUserNameEverywhere is issue 22's acceptance with real OpenSSH,
// sshd and JupyterHub: `ssh Alice@…` is the Linux user alice on her node
// (her authorized_keys is the file of alice), "ALICE" in the hub's login
// form is the same user on the same node (the hub lower-cases it too),
// and ops pinning "BOB" move bob. One user, one pin, in /api/nodes too.
func TestOneUserNameEverywhere(t *testing.T) {
	requirePeers(t, "jupyterhub")
	p := newPool(t, poolOptions{hubs: true})

	alice := p.hold("Alice")
	defer alice.close()
	out, errs, code := p.sshCmd("ALICE", `echo "$DSVM_NODE"; id -un`)
	if f := strings.Fields(out); code != 0 || len(f) != 2 || f[0] != alice.node || f[1] != "alice" {
		t.Fatalf("ssh ALICE: exit %d, %q %q; want alice on %s", code, out, errs, alice.node)
	}

	// The browser: ALICE signs in through the gateway.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "https://" + p.gw.HTTPAddr()
	resp, err := browser.PostForm(base+"/hub/login", url.Values{"username": {"ALICE"}, "password": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.Contains(strings.ToLower(strings.Join(resp.Header.Values("Set-Cookie"), "\n")), "jupyterhub-hub-login=") {
		t.Fatalf("the hub did not log ALICE in: %s %v", resp.Status, resp.Header)
	}
	bal := p.gw.Balancer()
	protos := map[balancer.Protocol]bool{}
	for _, s := range bal.Sessions() {
		if s.User != "alice" || s.Node != alice.node {
			t.Fatalf("session %+v; want only alice's, on %s", s, alice.node)
		}
		protos[s.Protocol] = true
	}
	if !protos[balancer.SSH] || !protos[balancer.HTTP] {
		t.Fatalf("sessions %+v; want alice's SSH and her browser's", bal.Sessions())
	}
	if pins := bal.Pins(); len(pins) != 1 || pins[0].User != "alice" || pins[0].Node != alice.node {
		t.Fatalf("pins %+v; want alice's one pin on %s", pins, alice.node)
	}
	for _, n := range apiNodes(t, p) {
		for _, u := range n.Users {
			if u != "alice" {
				t.Fatalf("/api/nodes shows user %q on %s", u, n.Name)
			}
		}
	}

	// Ops pin "BOB" to a node alice is not on: bob lands there.
	target := "node-1"
	if alice.node == target {
		target = "node-2"
	}
	req, _ := http.NewRequest("POST", "http://"+p.gw.AdminAddr()+"/api/users/BOB/pin", strings.NewReader(`{"node": "`+target+`"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"user":"bob"`) {
		t.Fatalf("pin BOB: %s %s", resp.Status, body)
	}
	if out, errs, code := p.sshCmd("bob", `echo "$DSVM_NODE"`); code != 0 || strings.TrimSpace(out) != target {
		t.Fatalf("bob after ops pinned BOB to %s: exit %d, %q %q", target, code, out, errs)
	}
}
