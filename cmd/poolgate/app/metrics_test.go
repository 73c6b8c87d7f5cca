package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/rdpgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// A gateway with admin.metrics_listen serves its metrics there, read-only
// and with the families of every front end under one name each, and
// poolgate_build_info; the listener stops with the gateway.
func TestGatewayMetricsListener(t *testing.T) {
	sshNode := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	rdpNode := testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		if _, err := rdpgw.ReadConnectionRequest(c, 1024); err != nil {
			return
		}
		_, _ = c.Write([]byte("\x03\x00\x00\x0b\x06\xd0\x00\x00\x12\x34\x00"))
		_, _ = io.Copy(io.Discard, c)
	})
	cfg := Config{StateDir: filepath.Join(t.TempDir(), "state"), ShutdownTimeout: time.Second}
	cfg.SSH.Listen, cfg.Admin.Listen, cfg.RDP.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Admin.MetricsListen = "127.0.0.1:0"
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "w1", SSH: sshNode, RDP: rdpNode}}
	cfg.Health = discovery.HealthConfig{Interval: 50 * time.Millisecond, Rise: 1}
	g, err := New(cfg, nil, WithVersion("1.2.3-test"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	defer stop()
	if g.MetricsAddr() == "" || g.MetricsAddr() == g.AdminAddr() {
		t.Fatalf("metrics listener at %q, admin API at %q", g.MetricsAddr(), g.AdminAddr())
	}
	testutil.Eventually(t, 5*time.Second, "w1's SSH and RDP up", func() bool {
		st := g.Balancer().Nodes()
		return len(st) == 1 && st[0].Check(balancer.SSH).Up && st[0].Check(balancer.RDP).Up
	})
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + g.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, text := get("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics on metrics_listen: %d", code)
	}
	for _, want := range []string{
		`poolgate_build_info{goversion="` + runtime.Version() + `",version="1.2.3-test"} 1`,
		`poolgate_health_checks_total{check="ssh",node="w1",result="ok"}`,
		`poolgate_health_checks_total{check="rdp",node="w1",result="ok"}`,
		`poolgate_relayed_bytes_total{direction="to_client",protocol="ssh"} 0`,
		`poolgate_relayed_bytes_total{direction="to_node",protocol="rdp"} 0`,
		`poolgate_login_refusals_total{protocol="rdp",reason="no_node"} 0`,
		`poolgate_login_refusals_total{protocol="ssh",reason="session_limit"} 0`,
		`poolgate_auth_failures_total{method="password",reason="wrong_password"} 0`,
		`poolgate_pick_duration_seconds_count{protocol="ssh"} 0`,
		`poolgate_node_sessions{node="w1",protocol="rdp"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, gone := range []string{"poolgate_ssh_auth_failures_total", "poolgate_ssh_relayed_bytes_total", "poolgate_hub_health_checks_total", "poolgate_rdp_health_checks_total", "poolgate_node_load{"} {
		if strings.Contains(text, gone) {
			t.Errorf("/metrics still has %s", gone)
		}
	}
	if code, _ := get("/api/nodes"); code != 404 {
		t.Errorf("GET /api/nodes on metrics_listen: %d, want 404", code)
	}
	resp, err := http.Post("http://"+g.MetricsAddr()+"/api/nodes/w1/drain", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || g.Balancer().Nodes()[0].State != balancer.StateUp {
		t.Errorf("POST drain on metrics_listen: %d, node %s", resp.StatusCode, g.Balancer().Nodes()[0].State)
	}
	addr := g.MetricsAddr()
	stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the metrics listener still takes connections after the gateway stopped")
	}
}

func TestMetricsListenBusyNamesItsKey(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := Config{StateDir: filepath.Join(t.TempDir(), "state")}
	cfg.SSH.Listen, cfg.Admin.Listen, cfg.Admin.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", busy.Addr().String()
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "w1", SSH: "127.0.0.1:1"}}
	if _, err := New(cfg, nil); err == nil || !strings.HasPrefix(err.Error(), "admin.metrics_listen: ") {
		t.Fatalf("New with metrics_listen on a busy port: %v, want an admin.metrics_listen error", err)
	}
}

func TestMetricsListenKeysInTheFile(t *testing.T) {
	cfg, err := ParseConfig("p.yaml", []byte(minimal+"admin:\n  metrics_listen: 0.0.0.0:9469\n  metrics_token_file: /etc/poolgate/metrics-token\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != "127.0.0.1:9090" || cfg.Admin.MetricsListen != "0.0.0.0:9469" || cfg.Admin.MetricsTokenFile != "/etc/poolgate/metrics-token" {
		t.Fatalf("admin %+v", cfg.Admin)
	}
	_, err = ParseConfig("p.yaml", []byte(minimal+"admin:\n  metrics_listen: 0.0.0.0:9469\n"))
	if err == nil || !strings.Contains(err.Error(), "admin.metrics_token_file: required when metrics_listen (0.0.0.0:9469) is not a loopback address") {
		t.Fatalf("a remote metrics_listen without a token: %v", err)
	}
}
