package app

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestCleanStopClearsSharedSessions: a gateway that stops cleanly takes
// its sessions out of Redis at once, so the other gateways' counts do not
// wait for lease_ttl.
func TestCleanStopClearsSharedSessions(t *testing.T) {
	srv := redistest.Start(t)
	// A node that passes the health check (it sends an SSH version line).
	nodeAddr := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	dir := t.TempDir()
	cfg := Config{StateDir: filepath.Join(dir, "state"), ShutdownTimeout: time.Second}
	cfg.SSH.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "node-1", SSH: nodeAddr}}
	cfg.Health = discovery.HealthConfig{Interval: 50 * time.Millisecond, Rise: 1}
	cfg.State = redisstate.Config{Redis: srv.URL(), Replica: "gw-a", LeaseTTL: time.Minute}
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	testutil.Eventually(t, 5*time.Second, "node-1 to be up", func() bool {
		return len(g.Balancer().Nodes()) > 0 && g.Balancer().Nodes()[0].State == balancer.StateUp
	})
	if _, err := g.Balancer().Acquire("alice", balancer.SSH, "192.0.2.1:1"); err != nil { // never released
		t.Fatal(err)
	}

	other, err := redisstate.New(redisstate.Config{Redis: srv.URL(), Replica: "gw-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	sessions := func() int {
		v, err := other.View(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return len(v.Sessions)
	}
	if n := sessions(); n != 1 {
		t.Fatalf("Redis holds %d sessions, want alice's", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := sessions(); n != 0 {
		t.Errorf("after a clean stop Redis still holds %d of the gateway's sessions (lease_ttl is a minute)", n)
	}
}
