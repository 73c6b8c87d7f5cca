package httpgw

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/internal/testutil"
)

// The HTTP front end records answers by code, picks, relayed bytes
// (bodies both ways and WebSocket traffic) and the requests no node could
// take, in the families the SSH and RDP front ends share.
func TestMetricsOfHTTP(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnvMetrics(t, Config{}, false, nil, nil, gwmetrics.New(reg).Front(balancer.HTTP))
	b := e.browser()
	val := func(name string, labels ...string) float64 {
		t.Helper()
		return testutil.MetricValue(t, reg, name, labels...)
	}

	if code, _, _ := e.get(b, "/hub/home"); code != http.StatusFound {
		t.Fatalf("/hub/home logged out: %d, want 302", code)
	}
	form := url.Values{"username": {"alice"}, "password": {"pw"}}.Encode()
	resp, err := b.Post(e.url+"/hub/login", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, body, _ := e.get(b, "/hub/home"); code != 200 || !strings.HasSuffix(body, "home of alice") {
		t.Fatalf("/hub/home after login: %d %q", code, body)
	}
	if got := val("poolgate_http_requests_total", "code", "302"); got != 2 {
		t.Errorf(`poolgate_http_requests_total{code="302"} = %v, want 2 (logged out, login)`, got)
	}
	if got := val("poolgate_http_requests_total", "code", "200"); got != 1 {
		t.Errorf(`poolgate_http_requests_total{code="200"} = %v, want 1`, got)
	}
	if got := val("poolgate_pick_duration_seconds", "protocol", "http"); got != 3 {
		t.Errorf("pick histogram: %v observations, want 3", got)
	}
	if got := val("poolgate_relayed_bytes_total", "protocol", "http", "direction", "to_node"); got != float64(len(form)) {
		t.Errorf("bytes to node %v, want the login form's %d", got, len(form))
	}
	home := float64(len("node-1 home of alice"))
	if got := val("poolgate_relayed_bytes_total", "protocol", "http", "direction", "to_client"); got < home {
		t.Errorf("bytes to client %v, want at least the home page's %v", got, home)
	}

	// A WebSocket: its traffic both ways, and its 101.
	toNode := val("poolgate_relayed_bytes_total", "protocol", "http", "direction", "to_node")
	toClient := val("poolgate_relayed_bytes_total", "protocol", "http", "direction", "to_client")
	c, br := dialWebSocket(t, e.url, "/user/alice/ws")
	fmt.Fprintf(c, "0123456789\n")
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	testutil.Eventually(t, 5*time.Second, "the WebSocket's bytes counted", func() bool {
		return val("poolgate_relayed_bytes_total", "protocol", "http", "direction", "to_node")-toNode >= 11 &&
			val("poolgate_relayed_bytes_total", "protocol", "http", "direction", "to_client")-toClient >= float64(len(line))
	})
	testutil.Eventually(t, 5*time.Second, "the upgrade counted as 101", func() bool {
		v, ok := testutil.LookupMetric(t, reg, "poolgate_http_requests_total", "code", "101")
		return ok && v == 1
	})

	// No node: a 503 and a no_node refusal.
	for _, n := range e.bal.Nodes() {
		e.bal.SetHealth(n.Name, balancer.HTTP, false, "down")
	}
	if code, _, _ := e.get(e.browser(), "/hub/anon"); code != http.StatusServiceUnavailable {
		t.Fatalf("with every hub down: %d, want 503", code)
	}
	if got := val("poolgate_http_requests_total", "code", "503"); got != 1 {
		t.Errorf(`poolgate_http_requests_total{code="503"} = %v, want 1`, got)
	}
	if got := val("poolgate_login_refusals_total", "protocol", "http", "reason", "no_node"); got != 1 {
		t.Errorf(`poolgate_login_refusals_total{protocol="http",reason="no_node"} = %v, want 1`, got)
	}
}
