package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/sshgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestOneUserAcrossFrontEnds is issue 22 with the real SSH and HTTP front
// ends on one balancer, in front of demo nodes and hubs: "Alice" by SSH
// (her key in the file of alice, a certificate the node checks against
// the name it is logged in as) and "ALICE" in the hub's login form are
// the one user alice, with one pin, on one node.
func TestOneUserAcrossFrontEnds(t *testing.T) {
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	keys, err := sshgw.LoadKeys(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	userKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "alice"), ssh.MarshalAuthorizedKey(userKey.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	var static []discovery.StaticNode
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("node-%d", i)
		hk, err := sshgw.LoadOrCreateKey(filepath.Join(dir, name+"_host_key"), name)
		if err != nil {
			t.Fatal(err)
		}
		n, err := StartDemoNode(name, "127.0.0.1:0", hk, keys.CA.PublicKey(), "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		hub, err := StartDemoHub(name, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(hub.Close)
		static = append(static, discovery.StaticNode{Name: name, SSH: n.Addr(), HTTP: hub.Addr()})
	}
	cfg := Config{StateDir: stateDir, ShutdownTimeout: 2 * time.Second}
	cfg.SSH.Listen, cfg.Admin.Listen, cfg.HTTP.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.SSH.AuthorizedKeys = sshgw.KeysTemplate(filepath.Join(keyDir, "{user}"))
	no := false
	cfg.HTTP.TLS, cfg.HTTP.UpstreamTLS, cfg.HTTP.AccessLog = &no, &no, &no
	cfg.Health = discovery.HealthConfig{Interval: 100 * time.Millisecond, Rise: 1, Fall: 2}
	cfg.Discovery.Static = static
	gw, err := New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	bal := gw.Balancer()
	testutil.Eventually(t, 10*time.Second, "three nodes and hubs up", func() bool {
		up := 0
		for _, n := range bal.Nodes() {
			if n.State == balancer.StateUp && n.Check(balancer.HTTP).Up {
				up++
			}
		}
		return up == 3
	})

	c, err := ssh.Dial("tcp", gw.SSHAddr(), &ssh.ClientConfig{
		User: "Alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(userKey)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh Alice: %v", err)
	}
	defer c.Close()
	run := func(cmd string) string {
		t.Helper()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, err := s.Output(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return strings.TrimSpace(string(out))
	}
	if who := run("whoami"); who != "alice" {
		t.Fatalf("ssh Alice is %q on the node, want alice", who)
	}
	home := run("hostname")

	// In a browser, ALICE signs in: the hub's page names her SSH node.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	resp, err := browser.PostForm("http://"+gw.HTTPAddr()+"/hub/login", url.Values{"username": {"ALICE"}, "password": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `<b id="node">`+home+`</b>`) {
		t.Fatalf("ALICE's hub page does not name alice's SSH node %s:\n%s", home, page)
	}
	// A link naming her in yet another case, from another browser.
	resp, err = (&http.Client{Timeout: 5 * time.Second}).Get("http://" + gw.HTTPAddr() + "/user/aLiCe/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `<b id="node">`+home+`</b>`) {
		t.Fatalf("/user/aLiCe/ did not reach alice's node %s:\n%s", home, page)
	}

	// One user in the balancer: her SSH and HTTP sessions, one pin.
	protos := map[balancer.Protocol]bool{}
	for _, s := range bal.Sessions() {
		if s.User != "alice" || s.Node != home {
			t.Fatalf("session %+v, want alice's on %s", s, home)
		}
		protos[s.Protocol] = true
	}
	if !protos[balancer.SSH] || !protos[balancer.HTTP] {
		t.Fatalf("sessions %+v, want alice's SSH and HTTP", bal.Sessions())
	}
	if pins := bal.Pins(); len(pins) != 1 || pins[0].User != "alice" || pins[0].Node != home {
		t.Fatalf("pins %+v, want alice's one pin on %s", pins, home)
	}
}
