package load

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/poolgate/poolgate/discovery/load/loadtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a hand-set time source.
type clock struct {
	mu sync.Mutex // protects t
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// sink records every SetLoad, and each node's last SetLoadError.
type sink struct {
	mu   sync.Mutex // protects got and errs
	got  map[string][]Sample
	errs map[string]error
}

func (s *sink) SetLoadError(node string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errs == nil {
		s.errs = map[string]error{}
	}
	s.errs[node] = err
}

// lastErr returns node's last reported error, and whether one (even nil)
// was reported.
func (s *sink) lastErr(node string) (error, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err, ok := s.errs[node]
	return err, ok
}

func (s *sink) SetLoad(node string, smp Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][]Sample{}
	}
	s.got[node] = append(s.got[node], smp)
}

// count returns how many samples node got.
func (s *sink) count(node string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got[node])
}

// last returns node's last sample.
func (s *sink) last(t *testing.T, node string) Sample {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got[node]) == 0 {
		t.Fatalf("no sample for %s", node)
	}
	return s.got[node][len(s.got[node])-1]
}

// exporter is an httptest server on 127.0.0.1 with a switchable answer.
type exporter struct {
	*httptest.Server
	mu     sync.Mutex // protects body and status
	body   string
	status int
	hits   atomic.Int32
	accept atomic.Value // the last Accept header
}

func newExporter(t *testing.T, body string) *exporter {
	e := &exporter{body: body, status: http.StatusOK}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		e.accept.Store(r.Header.Get("Accept"))
		e.mu.Lock()
		body, status := e.body, e.status
		e.mu.Unlock()
		if r.URL.Path != "/metrics" {
			status = http.StatusNotFound
		}
		w.Header().Set("Content-Type", textType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *exporter) set(status int, body string) {
	e.mu.Lock()
	e.status, e.body = status, body
	e.mu.Unlock()
}

func (e *exporter) addr() string { return strings.TrimPrefix(e.URL, "http://") }

func nodeBody(load float64, cpus int, avail float64) string {
	var b strings.Builder
	for i := range cpus {
		b.WriteString("node_cpu_seconds_total{cpu=\"" + strconv.Itoa(i) + "\",mode=\"idle\"} 1\n")
	}
	b.WriteString("node_load1 " + ftoa(load) + "\nnode_memory_MemTotal_bytes 1000\nnode_memory_MemAvailable_bytes " + ftoa(avail*1000) + "\n")
	return b.String()
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func newScraper(t *testing.T, cfg Config, sk Sink, c *clock, log *zap.Logger) *Scraper {
	t.Helper()
	s, err := New(cfg, sk, Options{Now: c.Now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.CloseIdleConnections)
	return s
}

func TestConfig(t *testing.T) {
	d := Config{}.WithDefaults()
	if d.Interval != 5*time.Second || d.Timeout != 2*time.Second || *d.Max != 0.9 || d.SessionCost != 0.1 || *d.MetricsPort != 9100 || d.GPUMetricsPort != 0 {
		t.Fatalf("defaults = %+v, want interval 5s, timeout 2s, max 0.9, session_cost 0.1, metrics_port 9100, gpu_metrics_port 0", d)
	}
	if off := (Config{Max: ptr(0.0), MetricsPort: ptr(0)}).WithDefaults(); *off.Max != 0 || *off.MetricsPort != 0 {
		t.Fatalf("0 must turn max and metrics_port off, not mean the default: %+v", off)
	}
	if got := (Config{Interval: time.Second}).WithDefaults().Timeout; got != time.Second {
		t.Errorf("timeout with a 1s interval = %s, want 1s", got)
	}
	if got := (Config{}).StaleAfter(); got != 15*time.Second {
		t.Errorf("StaleAfter = %s, want 15s", got)
	}
	for _, tt := range []struct {
		cfg Config
		err string
	}{
		{Config{}, ""},
		{Config{Interval: time.Second, Timeout: time.Second}, ""},
		{Config{Interval: -time.Second}, "interval: must be positive"},
		{Config{Interval: time.Millisecond}, "interval: 1ms is too short"},
		{Config{Timeout: -1}, "timeout: must be positive"},
		{Config{Interval: time.Second, Timeout: 2 * time.Second}, "timeout: 2s is longer than interval 1s"},
		{Config{Timeout: 6 * time.Second}, "timeout: 6s is longer than interval 5s"},
		{Config{Max: ptr(0.0), SessionCost: 0.5, MetricsPort: ptr(0), GPUMetricsPort: 9400}, ""},
		{Config{Max: ptr(-1.0)}, "max: must be 0 (off) or more, got -1"},
		{Config{Max: ptr(math.NaN())}, "max: must be 0 (off) or more"},
		{Config{SessionCost: -0.1}, "session_cost: must be 0 (the default) or more, got -0.1"},
		{Config{SessionCost: math.Inf(1)}, "session_cost: must be 0 (the default) or more"},
		{Config{MetricsPort: ptr(70000)}, "metrics_port: must be from 1 to 65535"},
		{Config{GPUMetricsPort: -1}, "gpu_metrics_port: must be from 1 to 65535"},
	} {
		err := tt.cfg.Validate()
		if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%+v.Validate() = %v, want %q", tt.cfg, err, tt.err)
		}
		if _, err := New(tt.cfg, &sink{}, Options{}); (tt.err == "") != (err == nil) {
			t.Errorf("New(%+v) = %v, want %q", tt.cfg, err, tt.err)
		}
	}
}

func TestScrapeOnceReportsBothExporters(t *testing.T) {
	ne := newExporter(t, nodeBody(15.9, 4, 0.1))
	dcgm := newExporter(t, string(loadtest.DCGMText(
		loadtest.GPU{Util: 97, UsedMiB: 78000, FreeMiB: 2000},
		loadtest.GPU{Util: 12, UsedMiB: 10000, FreeMiB: 70000})))
	ne2 := newExporter(t, nodeBody(1, 2, 0.5))
	c, sk := newClock(), &sink{}
	s := newScraper(t, Config{}, sk, c, nil)
	s.SetTargets([]Target{
		{Name: "node-1", Metrics: ne.addr(), GPUMetrics: dcgm.addr()},
		{Name: "node-2", Metrics: ne2.URL + "/metrics"}, // a full URL works too
		{Name: "node-3"}, // nothing to scrape
	})
	s.ScrapeOnce(context.Background())

	got := sk.last(t, "node-1")
	checkField(t, "node-1 CPU", got.CPU, want(15.9/4))
	checkField(t, "node-1 Memory", got.Memory, want(0.9))
	checkField(t, "node-1 GPU", got.GPU, want(0.12))
	checkField(t, "node-1 GPUMemory", got.GPUMemory, want(0.125))
	if !got.At.Equal(c.Now()) {
		t.Errorf("At = %v, want %v", got.At, c.Now())
	}
	got = sk.last(t, "node-2")
	checkField(t, "node-2 CPU", got.CPU, want(0.5))
	checkField(t, "node-2 GPU", got.GPU, nil)
	if n := sk.count("node-3"); n != 0 {
		t.Errorf("node-3 without exporters got %d samples", n)
	}
	if last, ok := s.Last("node-1"); !ok || *last.CPU != *sk.last(t, "node-1").CPU {
		t.Errorf("Last(node-1) = %+v, %v", last, ok)
	}
	if a, _ := ne.accept.Load().(string); a != Accept {
		t.Errorf("Accept = %q, want %q", a, Accept)
	}
}

// A failed exporter's last figures stay in the node's sample, with their
// old At, until they are StaleAfter old; then the node gets no sample at
// all, and the consumer's copy is stale.
func TestFailingExporterAgesOut(t *testing.T) {
	ne := newExporter(t, nodeBody(2, 4, 0.5))
	core, logs := observer.New(zapcore.InfoLevel)
	c, sk := newClock(), &sink{}
	cfg := Config{Interval: time.Second, Timeout: 500 * time.Millisecond}
	s := newScraper(t, cfg, sk, c, zap.New(core))
	s.SetTargets([]Target{{Name: "node-1", Metrics: ne.addr()}})
	ctx := context.Background()

	s.ScrapeOnce(ctx)
	good := c.Now()
	ne.set(http.StatusInternalServerError, "oops")
	for i := 1; i <= 2; i++ { // 1 and 2 intervals old: still reported
		c.Add(time.Second)
		s.ScrapeOnce(ctx)
		got := sk.last(t, "node-1")
		if !got.At.Equal(good) || got.CPU == nil || *got.CPU != 0.5 {
			t.Fatalf("round %d after the failure: %+v (CPU %v), want the last good sample at %v", i, got, got.CPU, good)
		}
		if got.Stale(c.Now(), cfg.StaleAfter()) {
			t.Fatalf("round %d: sample stale after %s", i, c.Now().Sub(good))
		}
	}
	c.Add(time.Second) // 3 intervals: missing
	before := sk.count("node-1")
	s.ScrapeOnce(ctx)
	if n := sk.count("node-1"); n != before {
		t.Fatalf("a node whose only exporter failed for 3 intervals got a sample: %+v", sk.last(t, "node-1"))
	}
	if !sk.last(t, "node-1").Stale(c.Now(), cfg.StaleAfter()) {
		t.Fatal("the sink's last sample is not stale after 3 intervals")
	}
	c.Add(time.Second)
	s.ScrapeOnce(ctx)

	ne.set(http.StatusOK, nodeBody(1, 4, 0.5))
	c.Add(time.Second)
	s.ScrapeOnce(ctx)
	got := sk.last(t, "node-1")
	if !got.At.Equal(c.Now()) || *got.CPU != 0.25 {
		t.Fatalf("after recovery: %+v, want CPU 0.25 at %v", got, c.Now())
	}

	// State changes are logged once each, not per scrape.
	for msg, n := range map[string]int{"load exporter up": 1, "load exporter failing": 1, "load exporter recovered": 1} {
		if got := logs.FilterMessage(msg).Len(); got != n {
			t.Errorf("%q logged %d times, want %d", msg, got, n)
		}
	}
	e := logs.FilterMessage("load exporter failing").All()[0]
	fields := e.ContextMap()
	if fields["node"] != "node-1" || fields["exporter"] != "node_exporter" || !strings.Contains(fields["error"].(string), "500") {
		t.Errorf("failing log fields = %v", fields)
	}
	if e.LoggerName != "load" {
		t.Errorf("logger name = %q, want load", e.LoggerName)
	}
}

// When only the GPU exporter fails, the node keeps its CPU and memory and
// its GPU figures go missing once they are StaleAfter old.
func TestPartialFailure(t *testing.T) {
	ne := newExporter(t, nodeBody(2, 4, 0.5))
	dcgm := newExporter(t, string(loadtest.DCGMText(loadtest.GPU{Util: 50, UsedMiB: 1, FreeMiB: 1})))
	c, sk := newClock(), &sink{}
	cfg := Config{Interval: time.Second, Timeout: 500 * time.Millisecond}
	s := newScraper(t, cfg, sk, c, nil)
	s.SetTargets([]Target{{Name: "n", Metrics: ne.addr(), GPUMetrics: dcgm.addr()}})
	ctx := context.Background()
	s.ScrapeOnce(ctx)
	dcgm.set(http.StatusOK, "DCGM_FI_DEV_SM_CLOCK{gpu=\"0\"} 139\n") // answers, but without the figures
	c.Add(time.Second)
	s.ScrapeOnce(ctx)
	got := sk.last(t, "n")
	checkField(t, "GPU one interval after", got.GPU, want(0.5))
	if err, _ := sk.lastErr("n"); err == nil || err.Error() != "dcgm_exporter: no load metrics in the response" {
		t.Errorf("n's reported error %v, want the GPU exporter's alone", err)
	}
	if want := c.Now().Add(-time.Second); !got.At.Equal(want) {
		t.Errorf("At = %v, want the oldest figure's time %v", got.At, want)
	}
	c.Add(2 * time.Second)
	s.ScrapeOnce(ctx)
	got = sk.last(t, "n")
	checkField(t, "GPU three intervals after", got.GPU, nil)
	checkField(t, "GPUMemory three intervals after", got.GPUMemory, nil)
	checkField(t, "CPU", got.CPU, want(0.5))
	if !got.At.Equal(c.Now()) {
		t.Errorf("At = %v, want %v", got.At, c.Now())
	}
}

func TestScrapeFailures(t *testing.T) {
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(hang) })
	huge := newExporter(t, strings.Repeat("# padding comment line\n", MaxBody/20))
	garbage := newExporter(t, "<html>not metrics</html>")
	ok := newExporter(t, nodeBody(1, 1, 1))
	closed := httptest.NewServer(http.NotFoundHandler())
	closedAddr := strings.TrimPrefix(closed.URL, "http://")
	closed.Close()

	core, logs := observer.New(zapcore.InfoLevel)
	c, sk := newClock(), &sink{}
	// The timeout must let a loaded machine read the 2 MiB body: the huge
	// exporter is to fail for its size, not for time.
	s := newScraper(t, Config{Interval: time.Second, Timeout: time.Second}, sk, c, zap.New(core))
	s.SetTargets([]Target{
		{Name: "slow", Metrics: strings.TrimPrefix(slow.URL, "http://")},
		{Name: "huge", Metrics: huge.addr()},
		{Name: "garbage", Metrics: garbage.addr()},
		{Name: "refused", Metrics: closedAddr},
		{Name: "wrong-path", Metrics: ok.URL + "/nothing"},
		{Name: "ok", Metrics: ok.addr()},
	})
	start := time.Now()
	s.ScrapeOnce(context.Background())
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a round with a hanging exporter took %s", d)
	}
	for _, n := range []string{"slow", "huge", "garbage", "refused", "wrong-path"} {
		if sk.count(n) != 0 {
			t.Errorf("%s got a sample: %+v", n, sk.last(t, n))
		}
	}
	checkField(t, "ok CPU", sk.last(t, "ok").CPU, want(1))
	errs := map[string]string{}
	for _, e := range logs.FilterMessage("load exporter failing").All() {
		errs[e.ContextMap()["node"].(string)] = e.ContextMap()["error"].(string)
	}
	for node, want := range map[string]string{
		"slow": "deadline exceeded", "huge": "larger than", "garbage": "no load metrics",
		"refused": "refused", "wrong-path": "404",
	} {
		if !strings.Contains(errs[node], want) {
			t.Errorf("%s logged error %q, want one containing %q", node, errs[node], want)
		}
	}
	// The sink is told each node's error, naming the exporter.
	for node, want := range map[string]string{
		"slow": "node_exporter: no answer within 1s", "huge": "node_exporter: ", "garbage": "node_exporter: no load metrics",
		"refused": "node_exporter: dial tcp", "wrong-path": "node_exporter: GET /nothing: 404",
	} {
		if err, _ := sk.lastErr(node); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s reported error %v, want one containing %q", node, err, want)
		}
	}
	if err, told := sk.lastErr("ok"); err != nil || !told {
		t.Errorf("ok reported error %v (told: %v), want nil", err, told)
	}
}

func TestSetTargets(t *testing.T) {
	a := newExporter(t, nodeBody(1, 1, 1))
	b := newExporter(t, nodeBody(2, 1, 1))
	c, sk := newClock(), &sink{}
	s := newScraper(t, Config{}, sk, c, nil)
	ctx := context.Background()
	s.SetTargets([]Target{{Name: "n1", Metrics: a.addr()}, {Name: "n2", Metrics: a.addr()}})
	s.ScrapeOnce(ctx)
	s.SetTargets([]Target{{Name: "n1", Metrics: b.addr()}}) // n1 moved, n2 left
	if _, ok := s.Last("n1"); ok {
		t.Error("n1's old sample survived its address change")
	}
	if _, ok := s.Last("n2"); ok {
		t.Error("n2 is still known after it left")
	}
	s.ScrapeOnce(ctx)
	checkField(t, "n1 CPU", sk.last(t, "n1").CPU, want(2))
	if n := sk.count("n2"); n != 1 {
		t.Errorf("n2 got %d samples, want only the one before it left", n)
	}
}

func TestRunScrapesEveryIntervalAndStops(t *testing.T) {
	ne := newExporter(t, nodeBody(1, 1, 1))
	sk := &sink{}
	s, err := New(Config{Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond}, sk, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.SetTargets([]Target{{Name: "n", Metrics: ne.addr()}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for sk.count("n") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d samples in 10s at a 20ms interval", sk.count("n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestSampleStale(t *testing.T) {
	now := newClock().Now()
	for _, tt := range []struct {
		at    time.Time
		stale bool
	}{
		{time.Time{}, true},
		{now, false},
		{now.Add(-14 * time.Second), false},
		{now.Add(-15 * time.Second), true},
	} {
		if got := (Sample{At: tt.at}).Stale(now, 15*time.Second); got != tt.stale {
			t.Errorf("Sample{At: %v}.Stale = %v, want %v", tt.at, got, tt.stale)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// An exporter that redirects is a scrape error naming the redirect: the
// scraper asks only the configured address, never one a node names.
func TestRedirectIsNotFollowed(t *testing.T) {
	elsewhere := newExporter(t, nodeBody(1, 1, 1))
	var fixed atomic.Bool // the redirector answers itself
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fixed.Load() {
			_, _ = w.Write([]byte(nodeBody(1, 1, 1)))
			return
		}
		http.Redirect(w, r, elsewhere.URL+"/metrics", http.StatusFound)
	}))
	t.Cleanup(redirector.Close)
	for _, tc := range []struct {
		name   string
		client *http.Client // nil: the scraper's own
	}{
		{"own client", nil},
		{"given client", &http.Client{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			c, sk := newClock(), &sink{}
			s, err := New(Config{}, sk, Options{Client: tc.client, Now: c.Now, Logger: zap.New(core)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.CloseIdleConnections)
			if tc.client != nil {
				t.Cleanup(tc.client.CloseIdleConnections)
			}
			s.SetTargets([]Target{{Name: "n1", Metrics: strings.TrimPrefix(redirector.URL, "http://")}})
			s.ScrapeOnce(context.Background())
			if n := elsewhere.hits.Load(); n != 0 {
				t.Errorf("the redirect's target got %d requests, want 0", n)
			}
			if sk.count("n1") != 0 {
				t.Errorf("n1 got a sample: %+v", sk.last(t, "n1"))
			}
			failing := logs.FilterMessage("load exporter failing").FilterField(zap.String("node", "n1")).All()
			if len(failing) != 1 {
				t.Fatalf("got %d \"load exporter failing\" lines for n1, want 1", len(failing))
			}
			if msg, _ := failing[0].ContextMap()["error"].(string); !strings.Contains(msg, "redirect") || !strings.Contains(msg, "302") {
				t.Errorf("error = %q, want one naming the 302 redirect", msg)
			}
			if tc.client != nil && tc.client.CheckRedirect != nil {
				t.Error("New changed the caller's client")
			}
			// The node is told why: the redirect, naming where it points.
			err, _ = sk.lastErr("n1")
			if err == nil || !strings.Contains(err.Error(), "node_exporter: GET /metrics: 302 Found: redirect to \""+elsewhere.URL+"/metrics\" not followed") {
				t.Errorf("n1's reported error %v, want the 302 redirect to %s/metrics", err, elsewhere.URL)
			}
			// A good answer clears it.
			fixed.Store(true)
			defer fixed.Store(false)
			s.ScrapeOnce(context.Background())
			if err, told := sk.lastErr("n1"); err != nil || !told || sk.count("n1") != 1 {
				t.Errorf("after a good answer n1's error is %v (told: %v), %d samples; want nil and 1", err, told, sk.count("n1"))
			}
		})
	}
}

// TestSetConfigTimeout: a reload's timeout holds from the next scrape: an
// exporter slower than the new timeout is a scrape error naming it; a bad
// setting is refused and changes nothing.
func TestSetConfigTimeout(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte(nodeBody(1, 2, 0.5)))
	}))
	defer slow.Close()
	c, sk := newClock(), &sink{}
	s := newScraper(t, Config{Interval: time.Second, Timeout: time.Second}, sk, c, nil)
	s.SetTargets([]Target{{Name: "node-1", Metrics: slow.URL + "/metrics"}})
	s.ScrapeOnce(context.Background())
	if n := sk.count("node-1"); n != 1 {
		t.Fatalf("a 300ms exporter with a 1s timeout gave %d samples", n)
	}
	if err := s.SetConfig(Config{Interval: time.Second, Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	s.ScrapeOnce(context.Background())
	sk.mu.Lock()
	err := sk.errs["node-1"]
	sk.mu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "no answer within 50ms (load.timeout)") {
		t.Fatalf("after the timeout fell to 50ms: %v", err)
	}
	if err := s.SetConfig(Config{Interval: -time.Second}); err == nil {
		t.Fatal("a negative interval was taken")
	}
	if got := s.cfg.Load().Timeout; got != 50*time.Millisecond {
		t.Fatalf("a refused SetConfig changed the timeout to %v", got)
	}
}
