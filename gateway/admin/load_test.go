package admin

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolgate/poolgate/balancer"
)

func TestAPIShowsLoad(t *testing.T) {
	b := testPool(t)
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b.SetLoad("node-1", balancer.Load{CPU: 0.5, Memory: 0.61, GPU: balancer.Unknown, GPUMemory: balancer.Unknown, At: at.Add(-5 * time.Second)})
	b.SetLoad("node-1", balancer.Load{CPU: 0.42, Memory: 0.61, GPU: balancer.Unknown, GPUMemory: balancer.Unknown, At: at})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(b, b))
	s, err := New(Config{}, b, Options{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, localRequest("GET", "/api/nodes", nil))
	// The raw JSON, as the contract writes it.
	var raw struct {
		Nodes []struct {
			Name string                     `json:"name"`
			Load map[string]json.RawMessage `json:"load"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for k, v := range raw.Nodes[0].Load {
		got[k] = string(v)
	}
	want := map[string]string{"cpu": "0.42", "memory": "0.61", "gpu": "null", "gpu_memory": "null", "updated": `"2026-12-02T10:00:00Z"`, "stale": "false"}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("node-1 load %v, want %v", got, want)
		}
	}
	if _, ok := got["error"]; ok {
		t.Fatalf("node-1's scrape never failed, yet load has an error: %v", got)
	}
	for _, k := range []string{"cpu", "memory", "gpu", "gpu_memory", "updated"} {
		if string(raw.Nodes[1].Load[k]) != "null" {
			t.Fatalf("node-2 is not measured: load %s = %s", k, raw.Nodes[1].Load[k])
		}
	}

	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, localRequest("GET", "/api/load", nil))
	var hist LoadHistoryJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &hist); err != nil || rec.Code != 200 {
		t.Fatalf("/api/load: %d %s", rec.Code, rec.Body)
	}
	if h := hist.Nodes["node-1"]; len(h) != 2 || *h[0].CPU != 0.5 || *h[1].CPU != 0.42 || h[1].GPU != nil {
		t.Fatalf("node-1's history %+v", h)
	}
	if h, ok := hist.Nodes["node-2"]; !ok || len(h) != 0 {
		t.Fatalf("node-2's history %+v (present: %v), want an empty list", h, ok)
	}

	_, text := scrape(t, s, "")
	for _, line := range []string{`poolgate_node_load1_per_cpu{node="node-1"} 0.42`, `poolgate_node_memory_used_ratio{node="node-1"} 0.61`, `poolgate_node_sessions{node="node-1",protocol="rdp"} 0`} {
		if !strings.Contains(text, line) {
			t.Fatalf("/metrics lacks %s:\n%s", line, text)
		}
	}
	if strings.Contains(text, `poolgate_node_gpu_utilization_ratio{`) || strings.Contains(text, `poolgate_node_gpu_memory_used_ratio{`) ||
		strings.Contains(text, `{node="node-2"} 0.`) || strings.Contains(text, `poolgate_node_load_timestamp_seconds{node="node-2"}`) {
		t.Fatalf("/metrics exports figures that were not measured:\n%s", text)
	}
}

// A node's last scrape error is in its load object, with or without
// figures, and is gone once a scrape succeeds.
func TestAPIShowsLoadScrapeError(t *testing.T) {
	b := testPool(t)
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b.SetLoad("node-1", balancer.Load{CPU: 0.42, Memory: 0.61, GPU: balancer.Unknown, GPUMemory: balancer.Unknown, At: at})
	redirect := `node_exporter: GET /metrics: 302 Found: redirect to "http://203.0.113.9/metrics" not followed (scrape the exporter's own address)`
	b.SetLoadError("node-1", "dcgm_exporter: dial tcp 10.0.0.4:9400: connect: connection refused")
	b.SetLoadError("node-2", redirect+"\x1b[31m")
	s, err := New(Config{}, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := func() map[string]map[string]json.RawMessage {
		t.Helper()
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, localRequest("GET", "/api/nodes", nil))
		var raw struct {
			Nodes []struct {
				Name string                     `json:"name"`
				Load map[string]json.RawMessage `json:"load"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil || rec.Code != 200 {
			t.Fatalf("/api/nodes: %d %s", rec.Code, rec.Body)
		}
		out := map[string]map[string]json.RawMessage{}
		for _, n := range raw.Nodes {
			out[n.Name] = n.Load
		}
		return out
	}
	got := nodes()
	var e1, e2 string
	if err := json.Unmarshal(got["node-1"]["error"], &e1); err != nil || e1 != "dcgm_exporter: dial tcp 10.0.0.4:9400: connect: connection refused" || string(got["node-1"]["cpu"]) != "0.42" {
		t.Fatalf("node-1's load %s: want its figures and the GPU exporter's error", got["node-1"])
	}
	if err := json.Unmarshal(got["node-2"]["error"], &e2); err != nil || e2 != redirect+`\x1b[31m` || string(got["node-2"]["cpu"]) != "null" {
		t.Fatalf("node-2's load %s: want no figures and the redirect, escaped", got["node-2"])
	}
	b.SetLoadError("node-2", "")
	if _, ok := nodes()["node-2"]["error"]; ok {
		t.Fatalf("node-2's error stays after a good scrape: %s", nodes()["node-2"])
	}
}
