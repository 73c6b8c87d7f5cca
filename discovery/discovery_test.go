package discovery

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadSSHBanner(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "SSH-2.0-OpenSSH_9.2p1 Debian-2", ""},
		{"hello\r\nlegal notice\r\nSSH-2.0-x\r\n", "SSH-2.0-x", ""},
		{"SSH-1.99-old\n", "SSH-1.99-old", ""},
		{"SSH-1.5-ancient\r\n", "", "unsupported protocol"},
		{"HTTP/1.1 400 Bad Request\r\n", "", "no SSH version line"},
		{"", "", "EOF"},
		{strings.Repeat("x", 300) + "\n", "", "longer than 255"},
		{strings.Repeat("line\n", 2000), "", "first 8 KiB"},
	} {
		got, err := ReadSSHBanner(bufio.NewReaderSize(strings.NewReader(tt.in), 256))
		if got != tt.want || (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ReadSSHBanner(%.30q) = %q, %v; want %q, error containing %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func FuzzReadSSHBanner(f *testing.F) {
	f.Add([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
	f.Add([]byte("banner\nSSH-2.0-x\n"))
	f.Add([]byte(strings.Repeat("a", 400)))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := ReadSSHBanner(bufio.NewReaderSize(strings.NewReader(string(in)), 256))
		if err == nil && !strings.HasPrefix(got, "SSH-") {
			t.Fatalf("accepted %q as a banner", got)
		}
		if err == nil && !strings.Contains(string(in), got) {
			t.Fatalf("banner %q not in input", got)
		}
	})
}

// recorder is a StatusSetter that keeps each node's latest state and the
// sequence of state changes.
type recorder struct {
	mu      sync.Mutex
	state   map[string]bool
	changes []string
}

func (r *recorder) SetHealth(node string, _ balancer.Protocol, up bool, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == nil {
		r.state = map[string]bool{}
	}
	if old, ok := r.state[node]; !ok || old != up {
		r.changes = append(r.changes, map[bool]string{true: node + " up", false: node + " down"}[up])
	}
	r.state[node] = up
}

func (r *recorder) waitChanges(t *testing.T, n int) []string {
	t.Helper()
	var c []string
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d state changes", n), func() bool {
		r.mu.Lock()
		c = append([]string(nil), r.changes...)
		r.mu.Unlock()
		return len(c) >= n
	})
	return c
}

// scripted is a probe whose results follow a script, then repeat the last.
type scripted struct {
	mu     sync.Mutex
	script []bool
	calls  int
}

func (s *scripted) probe(ctx context.Context, n balancer.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := s.script[min(s.calls, len(s.script)-1)]
	s.calls++
	if ok {
		return nil
	}
	return errors.New("refused")
}

func TestCheckerRiseFall(t *testing.T) {
	// up at once; two failures are not enough (fall 3); three are; one good
	// probe is not enough to come back (rise 2); two are.
	s := &scripted{script: []bool{true, false, false, true, false, false, false, true, false, true, true, true}}
	rec := &recorder{}
	c := NewChecker(HealthConfig{Interval: 10 * time.Millisecond, Rise: 2, Fall: 3}, rec, CheckerOptions{Probe: s.probe})
	c.SetNodes([]balancer.Node{{Name: "n1", SSH: "127.0.0.1:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	got := rec.waitChanges(t, 3)
	cancel()
	<-done
	want := []string{"n1 up", "n1 down", "n1 up"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("changes %v, want %v", got, want)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// down only after probe 7 (3 failures in a row), up after probe 11.
	if s.calls < 11 {
		t.Fatalf("state changes came after %d probes, want at least 11", s.calls)
	}
}

func TestCheckerFollowsNodeSet(t *testing.T) {
	rec := &recorder{}
	ok := func(ctx context.Context, n balancer.Node) error { return nil }
	c := NewChecker(HealthConfig{Interval: 10 * time.Millisecond}, rec, CheckerOptions{Probe: ok})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	c.SetNodes([]balancer.Node{{Name: "a"}})
	rec.waitChanges(t, 1)
	c.SetNodes([]balancer.Node{{Name: "b"}})
	got := rec.waitChanges(t, 2)
	c.mu.Lock()
	n := len(c.targets)
	c.mu.Unlock()
	cancel()
	<-done
	if got[1] != "b up" || n != 1 {
		t.Fatalf("after replacing a with b: changes %v, %d targets", got, n)
	}
}

func TestSSHBannerProbe(t *testing.T) {
	serve := func(t *testing.T, reply string) string { return testutil.ServeLine(t, "127.0.0.1:0", reply) }
	probe := SSHBannerProbe(&net.Dialer{})
	check := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return probe(ctx, balancer.Node{Name: "n", SSH: addr})
	}
	if err := check(serve(t, "SSH-2.0-OpenSSH_9.2\r\n")); err != nil {
		t.Errorf("sshd-like server: %v", err)
	}
	if err := check(serve(t, "HTTP/1.0 200 OK\r\n\r\n")); !errors.Is(err, ErrNoBanner) {
		t.Errorf("HTTP server: %v, want ErrNoBanner", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if err := check(closed); err == nil {
		t.Errorf("closed port: no error")
	}
}

func TestStaticValidate(t *testing.T) {
	ok := StaticNode{Name: "n1", SSH: "10.0.0.4:22"}
	for _, tt := range []struct {
		nodes []StaticNode
		want  string
	}{
		{[]StaticNode{ok}, ""},
		{nil, "static: list at least one node"},
		{[]StaticNode{{SSH: "10.0.0.4:22"}}, "static[0].name: missing"},
		{[]StaticNode{ok, ok}, `static[1].name: "n1" is already used by static[0]`},
		{[]StaticNode{{Name: "n", SSH: "10.0.0.4"}}, "static[0].ssh:"},
		{[]StaticNode{{Name: "n", SSH: "10.0.0.4:99999"}}, "static[0].ssh:"},
		{[]StaticNode{{Name: "n", SSH: ":22"}}, "has no host"},
		{[]StaticNode{{Name: "n", SSH: "h:22", HTTP: "h"}}, "static[0].http:"},
		{[]StaticNode{{Name: "n", SSH: "h:22", Weight: -1}}, "static[0].weight:"},
	} {
		err := Config{Static: tt.nodes}.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%v) = %v, want %q", tt.nodes, err, tt.want)
		}
	}
}

func TestHealthConfig(t *testing.T) {
	d := HealthConfig{}.WithDefaults()
	if d.Interval != 2*time.Second || d.Timeout != time.Second || d.Rise != 2 || d.Fall != 3 {
		t.Fatalf("defaults: %+v", d)
	}
	if err := (HealthConfig{Interval: time.Second, Timeout: 2 * time.Minute}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "timeout:") {
		t.Fatalf("timeout over a minute: %v", err)
	}
	// A short interval finds a dead node sooner; it does not make a busy
	// node that answers in 300 ms dead.
	if d := (HealthConfig{Interval: 200 * time.Millisecond}).WithDefaults(); d.Timeout != time.Second || d.Validate() != nil {
		t.Fatalf("interval 200ms: timeout %s, %v; want 1s and valid", d.Timeout, d.Validate())
	}
	if err := (HealthConfig{Fall: -1}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "fall:") {
		t.Fatalf("negative fall: %v", err)
	}
}

func TestCheckerCountsResults(t *testing.T) {
	s := &scripted{script: []bool{true, false, true}}
	c := NewChecker(HealthConfig{Interval: 10 * time.Millisecond}, &recorder{}, CheckerOptions{Probe: s.probe, Metrics: prometheus.NewRegistry()})
	v := c.results
	c.SetNodes([]balancer.Node{{Name: "n1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	testutil.Eventually(t, 10*time.Second, "two ok probe results", func() bool { return promtest.ToFloat64(v.WithLabelValues("ssh", "n1", "ok")) >= 2 })
	if ok, fail := promtest.ToFloat64(v.WithLabelValues("ssh", "n1", "ok")), promtest.ToFloat64(v.WithLabelValues("ssh", "n1", "fail")); ok < 2 || fail != 1 {
		t.Fatalf("results ok %v fail %v, want at least 2 and exactly 1", ok, fail)
	}
	c.SetNodes(nil) // n1 leaves the pool: its series go
	cancel()
	<-done
	if n := promtest.CollectAndCount(v); n != 0 {
		t.Fatalf("%d series left after the node left", n)
	}
}

// TestCheckersShareOneFamily: the SSH, hub and RDP checkers count into
// poolgate_health_checks_total with their check label, and a node that
// leaves one checker keeps its series of the others.
func TestCheckersShareOneFamily(t *testing.T) {
	reg := prometheus.NewRegistry()
	ok := func(context.Context, balancer.Node) error { return nil }
	fail := func(context.Context, balancer.Node) error { return errors.New("refused") }
	cfg := HealthConfig{Interval: 10 * time.Millisecond}
	ssh := NewChecker(cfg, &recorder{}, CheckerOptions{Probe: ok, Metrics: reg})
	hub := NewHTTPChecker(cfg, &recorder{}, CheckerOptions{Probe: fail, Metrics: reg})
	rdp := NewRDPChecker(cfg, &recorder{}, CheckerOptions{Probe: ok, Metrics: reg})
	nodes := []balancer.Node{{Name: "n1", SSH: "127.0.0.1:1", HTTP: "127.0.0.1:2", RDP: "127.0.0.1:3"}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range []*Checker{ssh, hub, rdp} {
		c.SetNodes(nodes)
		wg.Go(func() { c.Run(ctx) })
	}
	want := []struct{ check, result string }{{"ssh", "ok"}, {"hub", "fail"}, {"rdp", "ok"}}
	testutil.Eventually(t, 10*time.Second, "a result of every check", func() bool {
		for _, w := range want {
			if v, found := testutil.LookupMetric(t, reg, "poolgate_health_checks_total", "check", w.check, "node", "n1", "result", w.result); !found || v < 1 {
				return false
			}
		}
		return true
	})
	hub.SetNodes(nil)
	cancel()
	wg.Wait()
	if _, found := testutil.LookupMetric(t, reg, "poolgate_health_checks_total", "check", "hub"); found {
		t.Error("the hub check's series stayed after the node left it")
	}
	for _, check := range []string{"ssh", "rdp"} {
		if _, found := testutil.LookupMetric(t, reg, "poolgate_health_checks_total", "check", check, "node", "n1"); !found {
			t.Errorf("the %s check's series went with the hub check's", check)
		}
	}
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() != "poolgate_health_checks_total" {
			t.Errorf("checkers registered %s", f.GetName())
		}
	}
}

// TestHubHealthChecker runs the HTTP checker against a hub stand-in that
// answers /hub/health as told: a node whose hub fails goes down, one
// without an HTTP address is never probed, and the detail says what the
// hub answered.
func TestHubHealthChecker(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var paths sync.Map
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path, true)
		w.WriteHeader(int(status.Load()))
	}))
	defer hub.Close()
	addr := strings.TrimPrefix(hub.URL, "http://")

	var mu sync.Mutex
	details := map[string]string{}
	rec := &recorder{}
	to := StatusFunc(func(node string, _ balancer.Protocol, up bool, detail string) {
		mu.Lock()
		details[node] = detail
		mu.Unlock()
		rec.SetHealth(node, balancer.SSH, up, detail)
	})
	c := NewHTTPChecker(HealthConfig{Interval: 10 * time.Millisecond, Rise: 1, Fall: 1}, to, CheckerOptions{})
	c.SetNodes([]balancer.Node{{Name: "hub", SSH: "127.0.0.1:1", HTTP: addr}, {Name: "ssh-only", SSH: "127.0.0.1:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	rec.waitChanges(t, 1)
	status.Store(503)
	got := rec.waitChanges(t, 2)
	if got[0] != "hub up" || got[1] != "hub down" {
		t.Fatalf("changes %v, want hub up then hub down", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if d := details["hub"]; d != "GET /hub/health: 503 Service Unavailable" {
		t.Fatalf("detail %q", d)
	}
	if _, probed := details["ssh-only"]; probed {
		t.Fatal("a node without an HTTP address was probed")
	}
	if _, ok := paths.Load("/hub/health"); !ok {
		t.Fatal("the probe did not ask for /hub/health")
	}
}

func TestHubHealthProbeRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = HubHealthProbe(&http.Client{}, "http")(ctx, balancer.Node{Name: "n", HTTP: addr})
	if err == nil || !strings.Contains(err.Error(), "GET /hub/health") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("probe of a closed port: %v", err)
	}
}

// A probe that fails while the node is still up (fewer than fall in a
// row) is not reported as "up": that report would clear a dial failure a
// front end told the balancer about (NodeFailed), which the probe, failing
// too, confirms.
func TestFailingProbeBelowFallReportsNothing(t *testing.T) {
	s := &scripted{script: []bool{true, false, false, true}}
	var mu sync.Mutex
	var reports []string
	to := StatusFunc(func(node string, _ balancer.Protocol, up bool, detail string) {
		mu.Lock()
		reports = append(reports, fmt.Sprintf("%v %s", up, detail))
		mu.Unlock()
	})
	c := NewChecker(HealthConfig{Interval: 10 * time.Millisecond, Rise: 2, Fall: 3}, to, CheckerOptions{Probe: s.probe})
	c.SetNodes([]balancer.Node{{Name: "n1", SSH: "127.0.0.1:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	testutil.Eventually(t, 5*time.Second, "six probes", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.calls >= 6 })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, r := range reports {
		if strings.HasPrefix(r, "true ") && r != "true ok" {
			t.Fatalf("a failing probe was reported as up: %q (all: %q)", r, reports)
		}
	}
	if len(reports) < 3 || reports[0] != "true ok" {
		t.Fatalf("reports %q: want the passing probes reported", reports)
	}
}

// TestCheckerSetConfig: a reload's fall count holds from the next probe:
// with fall 1, one failure takes an up node down, where fall 5 would not
// have yet.
func TestCheckerSetConfig(t *testing.T) {
	s := &scripted{script: []bool{true, true, true}}
	rec := &recorder{}
	c := NewChecker(HealthConfig{Interval: 10 * time.Millisecond, Rise: 1, Fall: 5}, rec, CheckerOptions{Probe: s.probe})
	c.SetNodes([]balancer.Node{{Name: "n1", SSH: "127.0.0.1:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	rec.waitChanges(t, 1) // up
	c.SetConfig(HealthConfig{Interval: 10 * time.Millisecond, Rise: 1, Fall: 1})
	s.mu.Lock()
	s.script = append(s.script[:s.calls:s.calls], false) // fails from now on
	s.mu.Unlock()
	got := rec.waitChanges(t, 2)
	s.mu.Lock()
	failed := s.calls - len(s.script) + 1
	s.mu.Unlock()
	if got[1] != "n1 down" || failed > 3 {
		t.Fatalf("changes %v after %d failing probes; with fall 1 the first failure should take it down", got, failed)
	}
}
