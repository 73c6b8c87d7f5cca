package admin

import (
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolgate/poolgate/balancer"
)

func scrape(t *testing.T, s *Server, token string) (int, string) {
	t.Helper()
	req := localRequest("GET", "/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestMetricsReflectThePool(t *testing.T) {
	b := testPool(t) // alice twice and bob, over node-1 and node-2
	const tok = "metrics-token-0123456789"
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(b, b))
	s, err := New(Config{Listen: "0.0.0.0:9090", TokenFile: writeTok(t, tok)}, b, Options{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := scrape(t, s, ""); code != 401 {
		t.Fatalf("/metrics without token: %d", code)
	}
	code, text := scrape(t, s, tok)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, n := range b.Nodes() {
		want := []string{
			`poolgate_node_sessions{node="` + n.Name + `",protocol="ssh"} ` + itoa(n.Sessions.Of(balancer.SSH)),
			`poolgate_node_users{node="` + n.Name + `"} ` + itoa(len(n.Users)),
			`poolgate_node_state{node="` + n.Name + `",state="up"} 1`,
			`poolgate_node_state{node="` + n.Name + `",state="down"} 0`,
		}
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("metrics lack %s", w)
			}
		}
	}
	for _, w := range []string{`poolgate_sessions_started_total{protocol="ssh"} 3`, `poolgate_sessions_ended_total{protocol="ssh"} 0`} {
		if !strings.Contains(text, w) {
			t.Errorf("metrics lack %s", w)
		}
	}
	if strings.Contains(text, "alice") || strings.Contains(text, "bob") {
		t.Error("metrics carry user names")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
