package app

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestReloadAppliesLiveAndNamesTheRest: a reload adds a node (health
// checked, then placing users), rotates the admin token, changes the
// balancer's limits, and lists what needs a restart with why, keeping it.
func TestReloadAppliesLiveAndNamesTheRest(t *testing.T) {
	n1 := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	n2 := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("old-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{StateDir: filepath.Join(dir, "state"), ShutdownTimeout: time.Second}
	cfg.SSH.Listen, cfg.Admin.Listen, cfg.Admin.TokenFile = "127.0.0.1:0", "127.0.0.1:0", tok
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "node-1", SSH: n1}}
	cfg.Health = discovery.HealthConfig{Interval: 50 * time.Millisecond, Rise: 1}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	up := func(name string) bool {
		for _, n := range g.Balancer().Nodes() {
			if n.Name == name && n.State == balancer.StateUp {
				return true
			}
		}
		return false
	}
	testutil.Eventually(t, 5*time.Second, "node-1 up", func() bool { return up("node-1") })
	alice, err := g.Balancer().Acquire("alice", balancer.SSH, "192.0.2.1:1")
	if err != nil {
		t.Fatal(err)
	}

	next := cfg
	next.Discovery.Static = append([]discovery.StaticNode{}, cfg.Discovery.Static...)
	next.Discovery.Static = append(next.Discovery.Static, discovery.StaticNode{Name: "node-2", SSH: n2})
	next.Balancer.MaxSessionsPerNode = 1
	next.SSH.Listen = "127.0.0.1:1" // needs a restart
	next.Recording.Enabled = true   // so does this
	next.Health.Interval = time.Second
	if err := os.WriteFile(tok, []byte("new-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := g.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("applied %q; needs a restart: %q", r.Applied, r.NeedRestart)
	for _, want := range []string{"discovery.static: 2 nodes", "balancer", "admin tokens", "ssh (for new connections)", "health (each node's checks"} {
		if !containsPrefix(r.Applied, want) {
			t.Errorf("applied %q lacks %q", r.Applied, want)
		}
	}
	for _, want := range []string{"ssh.listen: a listener is bound at start", "recording: the recordings' store is opened at start"} {
		if !containsPrefix(r.NeedRestart, want) {
			t.Errorf("needs restart %q lacks %q", r.NeedRestart, want)
		}
	}
	// The added node is checked and takes the next user, since node-1 is
	// full at one session (max_sessions_per_node applied).
	testutil.Eventually(t, 5*time.Second, "node-2 up", func() bool { return up("node-2") })
	bob, err := g.Balancer().Acquire("bob", balancer.SSH, "192.0.2.2:1")
	if err != nil || bob.Node().Name != "node-2" {
		t.Fatalf("bob after the reload: %v on %v, want node-2", err, bob)
	}
	if alice.Node().Name != "node-1" {
		t.Fatal("alice's session moved")
	}
	// The rotated token: the old one is refused, the new one opens.
	for tk, want := range map[string]int{"old-token-0123456789abcdef": 401, "new-token-0123456789abcdef": 200} {
		req, _ := http.NewRequest("GET", "http://"+g.AdminAddr()+"/api/nodes", nil)
		req.Header.Set("Authorization", "Bearer "+tk)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("token %s after the reload: %d, want %d", tk[:3], resp.StatusCode, want)
		}
	}
	// A token file that cannot be read refuses the reload whole.
	bad := next
	bad.Discovery.Static = cfg.Discovery.Static
	bad.Admin.TokenFile = filepath.Join(dir, "missing")
	if _, err := g.Reload(bad); err == nil || !strings.Contains(err.Error(), "admin.token_file") {
		t.Fatalf("a reload with a missing token file: %v", err)
	}
	if len(g.Balancer().Nodes()) != 2 {
		t.Fatal("a refused reload changed the node list")
	}
}

func containsPrefix(list []string, p string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
