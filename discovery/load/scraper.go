package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Sink receives the scraper's samples and errors; cmd wires it to the
// balancer.
//
// SetLoad is called from the scraper's goroutines, once per node and
// round in which at least one of the node's exporters has a figure younger
// than [Config.StaleAfter]. It is called without any of the scraper's
// locks held but inside a round: it must return quickly and must not call
// ScrapeOnce (SetTargets and Last are fine). A round in which every exporter of a node has failed
// for that long reports nothing: the sink's last sample for the node then
// ages, and [Sample.Stale] tells when it counts as missing. A node just
// removed by SetTargets may still get one SetLoad from a scrape in flight;
// sinks ignore nodes they do not know.
//
// SetLoadError is called likewise once per node and round, after any
// SetLoad of the round: with why the round's scrape failed (each failing
// exporter's name and error, e.g. a redirect naming its Location), or nil
// when every exporter of the node answered. An error may quote what an
// exporter sent: the sink bounds it and escapes what is not printable.
type Sink interface {
	SetLoad(node string, s Sample)
	SetLoadError(node string, err error)
}

// Target is one node's exporters. An address is host:port (scraped at
// http://host:port/metrics) or a full http(s) URL; empty means the node
// has no such exporter.
type Target struct {
	Name       string
	Metrics    string // node_exporter, for CPU and memory
	GPUMetrics string // dcgm-exporter, for GPU and GPU memory
}

// Options are the scraper's collaborators; every field may be nil.
type Options struct {
	// Client makes the requests. Nil: a client of the scraper's own that
	// uses no proxy (exporters sit on the nodes' private addresses).
	// Redirects are never followed, whatever the client's CheckRedirect
	// (the scraper uses a copy of it).
	Client *http.Client
	// Now is the clock that stamps samples. Nil: time.Now.
	Now func() time.Time
	// Logger gets exporter state changes at Info. Nil: no logging.
	Logger *zap.Logger
}

// Scraper scrapes every target's exporters each interval and reports to a
// Sink. Create it with New; call SetTargets whenever the node set changes
// and Run once.
type Scraper struct {
	cfg    atomic.Pointer[Config] // replaced whole by SetConfig
	sink   Sink
	client *http.Client
	own    bool // client is the scraper's own
	now    func() time.Time
	log    *zap.Logger

	round sync.Mutex // held for a whole round: rounds never overlap

	// mu protects nodes and everything in them.
	mu    sync.Mutex
	nodes map[string]*nodeState
}

// exporter kinds, indexes of nodeState.exp.
const (
	nodeExp = iota
	gpuExp
)

var expNames = [...]string{"node_exporter", "dcgm_exporter"}

type nodeState struct {
	target Target
	exp    [2]expState
	last   Sample // last reported
	ok     bool   // last is set
}

type expState struct {
	good  Sample // the fields this exporter measured last time it answered
	state int    // stateUnknown, stateUp, stateDown
}

const (
	stateUnknown = iota
	stateUp
	stateDown
)

// New returns a scraper reporting to sink, or an error naming the bad
// key of cfg.
func New(cfg Config, sink Sink, opts Options) (*Scraper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	s := &Scraper{sink: sink, client: opts.Client, now: opts.Now, log: opts.Logger, nodes: map[string]*nodeState{}}
	s.cfg.Store(&cfg)
	if s.client == nil {
		s.own = true
		s.client = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
			TLSHandshakeTimeout: cfg.Timeout,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     3 * cfg.Interval,
		}}
	} else {
		c := *s.client // the caller's client stays as it is
		s.client = &c
	}
	// Scrape only the configured address: anything answering on a node's
	// metrics port could otherwise make every gateway send GETs every
	// interval to an address it names. A redirect is a scrape error.
	s.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.Named("load")
	return s, nil
}

// SetTargets replaces the set of nodes to scrape. A node whose addresses
// changed starts afresh; a node left out is forgotten.
func (s *Scraper) SetTargets(targets []Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[string]Target, len(targets))
	for _, t := range targets {
		if t.Metrics != "" || t.GPUMetrics != "" {
			want[t.Name] = t
		}
	}
	for name, st := range s.nodes {
		if t, ok := want[name]; !ok || t != st.target {
			delete(s.nodes, name)
		}
	}
	for name, t := range want {
		if _, ok := s.nodes[name]; !ok {
			s.nodes[name] = &nodeState{target: t}
		}
	}
}

// Last returns the sample last reported for node, and whether there is
// one.
func (s *Scraper) Last(node string) (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.nodes[node]
	if st == nil || !st.ok {
		return Sample{}, false
	}
	return st.last, true
}

// SetConfig puts new settings in force (a reload): the interval from the
// next round, the timeout from the next scrape. Its error names the bad
// key; then nothing changes. Exporter ports are the caller's.
func (s *Scraper) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.WithDefaults()
	s.cfg.Store(&cfg)
	return nil
}

// Run scrapes at once and then every Interval until ctx ends, and returns
// when the scrapes in flight have finished.
func (s *Scraper) Run(ctx context.Context) {
	if s.own {
		defer s.CloseIdleConnections()
	}
	every := s.cfg.Load().Interval
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if now := s.cfg.Load().Interval; now != every { // a reload
			every = now
			tick.Reset(every)
		}
		s.ScrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// CloseIdleConnections closes the idle keep-alive connections of the
// scraper's own client (Run does it when it ends).
func (s *Scraper) CloseIdleConnections() {
	if s.own {
		s.client.CloseIdleConnections()
	}
}

// ScrapeOnce scrapes every target once, all concurrently, reports, and
// returns when all are done: after at most Timeout (plus the sink's time).
func (s *Scraper) ScrapeOnce(ctx context.Context) {
	s.round.Lock()
	defer s.round.Unlock()
	s.mu.Lock()
	nodes := make([]*nodeState, 0, len(s.nodes))
	for _, st := range s.nodes {
		nodes = append(nodes, st)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, st := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.scrapeNode(ctx, st)
		}()
	}
	wg.Wait()
}

// scrapeNode scrapes one node's exporters concurrently, then reports.
func (s *Scraper) scrapeNode(ctx context.Context, st *nodeState) {
	t := st.target // never changes: SetTargets replaces the state instead
	log := s.log.With(zap.String("node", t.Name))
	defer func() {
		if r := recover(); r != nil {
			log.Error("load scrape panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	addrs := [2]string{nodeExp: t.Metrics, gpuExp: t.GPUMetrics}
	parsers := [2]func(io.Reader, string) (Sample, error){nodeExp: ParseNode, gpuExp: ParseGPU}
	type result struct {
		s   Sample
		err error
	}
	var res [2]result
	var wg sync.WaitGroup
	for i, addr := range addrs {
		if addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					res[i].err = fmt.Errorf("panic: %v", r)
					log.Error("load scrape panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
				}
			}()
			smp, err := s.fetch(ctx, addr, parsers[i])
			res[i] = result{smp, err}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // shutting down: a cancelled scrape says nothing of the node
	}

	now := s.now()
	stale := s.cfg.Load().StaleAfter()
	s.mu.Lock()
	if s.nodes[t.Name] != st {
		s.mu.Unlock()
		return // removed or replaced while we scraped
	}
	var out Sample
	var errs []string
	for i, addr := range addrs {
		if addr == "" {
			continue
		}
		e := &st.exp[i]
		elog := log.With(zap.String("exporter", expNames[i]), zap.String("addr", addr))
		if err := res[i].err; err != nil {
			msg := err.Error()
			if errors.Is(err, context.DeadlineExceeded) {
				msg = fmt.Sprintf("no answer within %s (load.timeout)", s.cfg.Load().Timeout)
			}
			errs = append(errs, expNames[i]+": "+msg)
			if e.state != stateDown {
				elog.Info("load exporter failing", zap.Error(err))
			}
			e.state = stateDown
		} else {
			switch e.state {
			case stateUnknown:
				elog.Info("load exporter up")
			case stateDown:
				elog.Info("load exporter recovered")
			}
			e.state = stateUp
			e.good = res[i].s
			e.good.At = now
		}
		if e.good.At.IsZero() || e.good.Stale(now, stale) {
			continue
		}
		out = out.merge(e.good)
		if out.At.IsZero() || e.good.At.Before(out.At) {
			out.At = e.good.At
		}
	}
	report := !out.At.IsZero()
	if report {
		st.last, st.ok = out, true
	}
	s.mu.Unlock()
	if report {
		s.sink.SetLoad(t.Name, out)
	}
	var err error
	if len(errs) > 0 {
		err = errors.New(strings.Join(errs, "; "))
	}
	s.sink.SetLoadError(t.Name, err)
}

// maxLocation bounds how much of a redirect's Location an error quotes.
const maxLocation = 200

// errNoMetrics means an exporter answered without any of the metrics read.
var errNoMetrics = errors.New("no load metrics in the response")

// fetch scrapes one exporter within the scrape timeout.
func (s *Scraper) fetch(ctx context.Context, addr string, parse func(io.Reader, string) (Sample, error)) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Load().Timeout)
	defer cancel()
	u := addr
	if !strings.Contains(addr, "://") {
		u = "http://" + addr + "/metrics"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Sample{}, err
	}
	req.Header.Set("Accept", Accept)
	req.Header.Set("User-Agent", "poolgate-load")
	resp, err := s.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the address is in the log line already
		}
		return Sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			if len(loc) > maxLocation {
				loc = loc[:maxLocation] + "…"
			}
			return Sample{}, fmt.Errorf("GET %s: %s: redirect to %q not followed (scrape the exporter's own address)", req.URL.Path, resp.Status, loc)
		}
		return Sample{}, fmt.Errorf("GET %s: %s", req.URL.Path, resp.Status)
	}
	smp, err := parse(resp.Body, resp.Header.Get("Content-Type"))
	if err != nil {
		return Sample{}, err
	}
	if !smp.Measured() {
		return Sample{}, errNoMetrics
	}
	return smp, nil
}
