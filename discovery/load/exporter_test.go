package load

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/discovery/load/loadtest"
)

func approx(t *testing.T, name string, got *float64, want, tol float64) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s = nil, want ≈ %v", name, want)
	}
	if math.Abs(*got-want) > tol {
		t.Fatalf("%s = %v, want ≈ %v", name, *got, want)
	}
}

// The real Debian node_exporter, reading a procfs the test writes.
func TestRealNodeExporter(t *testing.T) {
	ne := loadtest.StartNodeExporter(t, "127.0.0.2:0", loadtest.Load{Load1: 15.9, CPUs: 4, MemAvailable: 0.1})
	c, sk := newClock(), &sink{}
	cfg := Config{Interval: time.Second, Timeout: 900 * time.Millisecond}
	s := newScraper(t, cfg, sk, c, nil)
	s.SetTargets([]Target{{Name: "node-2", Metrics: ne.Addr}})
	ctx := context.Background()

	s.ScrapeOnce(ctx)
	got := sk.last(t, "node-2")
	approx(t, "CPU", got.CPU, 3.975, 1e-3) // 15.9 on 4 CPUs
	approx(t, "Memory", got.Memory, 0.9, 1e-3)
	checkField(t, "GPU", got.GPU, nil)

	ne.SetLoad(loadtest.Load{Load1: 0.5, CPUs: 2, MemAvailable: 0.75})
	c.Add(time.Second)
	s.ScrapeOnce(ctx) // the next scrape sees the rewrite
	got = sk.last(t, "node-2")
	approx(t, "CPU after the rewrite", got.CPU, 0.25, 1e-3)
	approx(t, "Memory after the rewrite", got.Memory, 0.25, 1e-3)
	good := got.At

	ne.Stop()
	c.Add(time.Second)
	s.ScrapeOnce(ctx)
	if got := sk.last(t, "node-2"); !got.At.Equal(good) {
		t.Fatalf("one interval after the exporter stopped: At = %v, want the last good %v", got.At, good)
	}
	c.Add(2 * time.Second)
	n := sk.count("node-2")
	s.ScrapeOnce(ctx)
	if sk.count("node-2") != n {
		t.Fatal("a node whose exporter is gone for 3 intervals got a sample")
	}
	if !sk.last(t, "node-2").Stale(c.Now(), cfg.StaleAfter()) {
		t.Fatal("the node's last sample is not stale 3 intervals after its exporter stopped")
	}

	ne.Restart()
	c.Add(time.Second)
	s.ScrapeOnce(ctx)
	got = sk.last(t, "node-2")
	if got.Stale(c.Now(), cfg.StaleAfter()) || !got.At.Equal(c.Now()) {
		t.Fatalf("after the exporter came back: %+v", got)
	}
	approx(t, "CPU after restart", got.CPU, 0.25, 1e-3)
}

// The same through Run and the real clock, as the gateway runs it.
func TestRealNodeExporterRun(t *testing.T) {
	ne := loadtest.StartNodeExporter(t, "127.0.0.3:0", loadtest.Idle)
	sk := &sink{}
	cfg := Config{Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond}
	s, err := New(cfg, sk, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.SetTargets([]Target{{Name: "node-3", Metrics: ne.Addr}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, cond func(Sample) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if sk.count("node-3") > 0 && cond(sk.last(t, "node-3")) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("an idle sample", func(s Sample) bool { return s.CPU != nil && *s.CPU == 0 })
	ne.SetLoad(loadtest.Load{Load1: 15.9, CPUs: 4, MemAvailable: 0.1})
	waitFor("CPU ≈ 3.97", func(s Sample) bool { return s.CPU != nil && math.Abs(*s.CPU-3.975) < 1e-3 })
	ne.Stop()
	waitFor("a stale sample", func(s Sample) bool { return s.Stale(time.Now(), cfg.StaleAfter()) })
}

// The GPU path, with a recorded dcgm-exporter output served over HTTP.
func TestRecordedDCGMOverHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, "testdata/dcgm-a100-mig.prom")
	}))
	t.Cleanup(srv.Close)
	c, sk := newClock(), &sink{}
	s := newScraper(t, Config{}, sk, c, nil)
	s.SetTargets([]Target{{Name: "gpu-node", GPUMetrics: strings.TrimPrefix(srv.URL, "http://")}})
	s.ScrapeOnce(context.Background())
	got := sk.last(t, "gpu-node")
	approx(t, "GPUMemory", got.GPUMemory, 4845.0/(4845+35690), 1e-9)
	checkField(t, "GPU (not reported in MIG mode)", got.GPU, nil)
	checkField(t, "CPU", got.CPU, nil)
}

// A node with node_exporter and the dcgm-exporter stand-in, whose GPUs
// fill up.
func TestNodeWithGPUs(t *testing.T) {
	ne := loadtest.StartNodeExporter(t, "127.0.0.4:0", loadtest.Idle)
	gpu := loadtest.StartDCGM(t, "127.0.0.4:0",
		loadtest.GPU{Util: 100, UsedMiB: 40000, FreeMiB: 536},
		loadtest.GPU{Util: 0, UsedMiB: 0, FreeMiB: 40536})
	c, sk := newClock(), &sink{}
	s := newScraper(t, Config{}, sk, c, nil)
	s.SetTargets([]Target{{Name: "node-4", Metrics: ne.Addr, GPUMetrics: gpu.Addr}})
	ctx := context.Background()
	s.ScrapeOnce(ctx)
	got := sk.last(t, "node-4")
	approx(t, "CPU", got.CPU, 0, 1e-9)
	approx(t, "GPU (the idle one)", got.GPU, 0, 1e-9)
	approx(t, "GPUMemory (the idle one)", got.GPUMemory, 0, 1e-9)

	gpu.Set(loadtest.GPU{Util: 100, UsedMiB: 40000, FreeMiB: 536}, loadtest.GPU{Util: 95, UsedMiB: 39000, FreeMiB: 1536})
	c.Add(5 * time.Second)
	s.ScrapeOnce(ctx)
	got = sk.last(t, "node-4")
	approx(t, "GPU when both are busy", got.GPU, 0.95, 1e-9)
	approx(t, "GPUMemory when both are busy", got.GPUMemory, 39000.0/40536, 1e-9)
}
