package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery/load"
)

func TestLoadSectionParses(t *testing.T) {
	doc := `load:
  interval: 2s
  max: 0.8
  metrics_port: 9101
  gpu_metrics_port: 9400
discovery:
  static:
    - {name: node-1, ssh: 10.0.0.4:22, http: 10.0.0.4:8000, metrics: 10.0.0.4:9100, gpu_metrics: 10.0.0.4:9400}
`
	cfg, err := ParseConfig("p.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Load
	if l.Interval != 2*time.Second || *l.Max != 0.8 || *l.MetricsPort != 9101 || l.GPUMetricsPort != 9400 || l.SessionCost != 0.1 {
		t.Fatalf("load: %+v", l)
	}
	if b := cfg.Balancer.Load; b.Max != 0.8 || b.StaleAfter != 6*time.Second || b.SessionCost != 0.1 {
		t.Fatalf("the balancer's part: %+v", b)
	}
	n := cfg.Discovery.Static[0]
	if n.Metrics != "10.0.0.4:9100" || n.GPUMetrics != "10.0.0.4:9400" {
		t.Fatalf("static node: %+v", n)
	}
}

func TestLoadSectionDefaultsAndOff(t *testing.T) {
	cfg, err := ParseConfig("p.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Load; l.Interval != 5*time.Second || *l.Max != 0.9 || *l.MetricsPort != 9100 || l.GPUMetricsPort != 0 {
		t.Fatalf("defaults: %+v", l)
	}
	cfg, err = ParseConfig("p.yaml", []byte("load:\n  max: 0\n  metrics_port: 0\n"+minimal))
	if err != nil {
		t.Fatal(err)
	}
	if *cfg.Load.Max != 0 || cfg.Balancer.Load.Max != 0 || *cfg.Load.MetricsPort != 0 {
		t.Fatalf("0 must turn them off, not mean the default: %+v", cfg.Load)
	}
	// The balancer's own fallback, for a balancer built without the
	// section, must agree with the section's default.
	if load.DefaultSessionCost != balancer.DefaultSessionCost {
		t.Fatalf("session_cost default %v, the balancer's %v", load.DefaultSessionCost, balancer.DefaultSessionCost)
	}
}

func TestLoadSectionErrorsNameTheKey(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{"load:\n  max: -1\n" + minimal, "p.yaml:2: load.max: must be 0 (off) or more"},
		{"load:\n  session_cost: -1\n" + minimal, "p.yaml:2: load.session_cost: must be 0 (the default) or more"},
		{"load:\n  interval: -5s\n" + minimal, "load.interval:"},
		{"load:\n  metrics_port: 70000\n" + minimal, "load.metrics_port:"},
		{"load:\n  gpu_metrics_port: -1\n" + minimal, "load.gpu_metrics_port:"},
		{"load:\n  maximum: 1\n" + minimal, "load.maximum: unknown key"},
		{"load:\n  max: 90\n" + minimal, "p.yaml:2: load.max: 90 is more than 1: it is a fraction (0.9 = 90% of CPU run queue per CPU, memory or GPU); write 0.9"},
		{"discovery:\n  static:\n    - {name: n1, ssh: '10.0.0.4:22', metrics: nope}\n", "discovery.static[0].metrics:"},
	} {
		_, err := ParseConfig("p.yaml", []byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.doc, err, tt.want)
		}
	}
}

func TestLoadTargets(t *testing.T) {
	// A static node names its exporters; one without is not scraped.
	out := targetsFor([]balancer.Node{{Name: "a", SSH: "10.0.0.4:22", Metrics: "10.0.0.4:9100"}, {Name: "b", SSH: "10.0.0.5:22"}}, 0, 0)
	if len(out) != 1 || out[0].Name != "a" || out[0].Metrics != "10.0.0.4:9100" || out[0].GPUMetrics != "" {
		t.Fatalf("static: %+v", out)
	}
	// Azure: the ports on each instance's address.
	out = targetsFor([]balancer.Node{{Name: "vm0", SSH: "10.0.0.6:22"}, {Name: "vm1", SSH: "[fd00::7]:22"}}, 9100, 9400)
	if len(out) != 2 || out[0].Metrics != "10.0.0.6:9100" || out[0].GPUMetrics != "10.0.0.6:9400" || out[1].Metrics != "[fd00::7]:9100" {
		t.Fatalf("azure: %+v", out)
	}
}

func TestToBalancerLoad(t *testing.T) {
	cpu, at := 0.5, time.Unix(100, 0)
	l := toBalancerLoad(load.Sample{CPU: &cpu, At: at})
	if l.CPU != 0.5 || l.At != at || !isNaN(l.Memory) || !isNaN(l.GPU) || !isNaN(l.GPUMemory) {
		t.Fatalf("%+v", l)
	}
}

func isNaN(f float64) bool { return f != f }

// A node whose exporter redirects shows the scrape error, naming where the
// redirect pointed, on the balancer's node status; a good answer clears it.
func TestLoadScrapeErrorShownOnTheNode(t *testing.T) {
	var good atomic.Bool
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !good.Load() {
			http.Redirect(w, r, other.URL+"/metrics", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1\nnode_load1 0.5\nnode_memory_MemTotal_bytes 1000\nnode_memory_MemAvailable_bytes 750\n"))
	}))
	t.Cleanup(exporter.Close)

	bal := balancer.New(balancer.Config{}, balancer.Options{})
	bal.SetNodes([]balancer.Node{{Name: "node-1", SSH: "127.0.0.1:22", Metrics: strings.TrimPrefix(exporter.URL, "http://")}})
	sc, err := load.New(load.Config{}, loadSink{bal}, load.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.CloseIdleConnections)
	sc.SetTargets(targetsFor([]balancer.Node{{Name: "node-1", Metrics: strings.TrimPrefix(exporter.URL, "http://")}}, 0, 0))

	before := time.Now()
	sc.ScrapeOnce(context.Background())
	st := bal.Nodes()[0]
	want := `node_exporter: GET /metrics: 302 Found: redirect to "` + other.URL + `/metrics" not followed`
	if !strings.Contains(st.LoadError, want) || st.LoadErrorAt.Before(before) {
		t.Fatalf("node-1's load error %q at %v, want one containing %q", st.LoadError, st.LoadErrorAt, want)
	}
	if st.Load.Measured() || elsewhere.Load() != 0 {
		t.Fatalf("node-1 has figures %+v; the redirect's target got %d requests", st.Load, elsewhere.Load())
	}

	good.Store(true)
	sc.ScrapeOnce(context.Background())
	st = bal.Nodes()[0]
	if st.LoadError != "" || !st.LoadErrorAt.IsZero() || st.Load.CPU != 0.5 {
		t.Fatalf("after a good scrape node-1's load error is %q at %v, load %+v", st.LoadError, st.LoadErrorAt, st.Load)
	}
}
