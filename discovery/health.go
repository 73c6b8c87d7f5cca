package discovery

import (
	"bufio"
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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
)

// StatusSetter receives health-check results: the balancer.
type StatusSetter interface {
	SetHealth(node string, proto balancer.Protocol, up bool, detail string)
}

// HealthConfig is the YAML section "health".
type HealthConfig struct {
	// Interval between probes of one node. Default 2s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe (connect and banner): a probe slower than
	// this fails. Default 1s, whatever the interval: a short interval
	// finds a dead node sooner, but a busy node that answers in 300 ms is
	// slow, not dead. Probes of one node never overlap.
	Timeout time.Duration `yaml:"timeout"`
	// Rise is how many consecutive good probes bring a down node up.
	// Default 2.
	Rise int `yaml:"rise"`
	// Fall is how many consecutive failed probes take an up node down.
	// Default 3.
	Fall int `yaml:"fall"`
	// RepinAfter is how long a node may stay down, with no session of it
	// relaying, before its users' pins move to other nodes. A node that
	// is down takes no new users at once; its users stay while it may
	// only be slow. A dial, login or session to it that fails moves them
	// at once. Default 2m (balancer.DefaultRepinAfter).
	RepinAfter time.Duration `yaml:"repin_after"`
}

// WithDefaults fills zero fields with the documented defaults.
func (c HealthConfig) WithDefaults() HealthConfig {
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.Rise == 0 {
		c.Rise = 2
	}
	if c.Fall == 0 {
		c.Fall = 3
	}
	if c.RepinAfter == 0 {
		c.RepinAfter = balancer.DefaultRepinAfter
	}
	return c
}

// Validate reports every bad setting (joined, one error each), naming its key.
func (c HealthConfig) Validate() error {
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: must be positive, got %s", c.Interval))
	}
	if c.Interval > 0 && c.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval: %s is too short (at least 10ms)", c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: must be positive, got %s", c.Timeout))
	}
	if c.Timeout > time.Minute {
		errs = append(errs, fmt.Errorf("timeout: %s is too long (at most 1m)", c.Timeout))
	}
	if c.Rise < 0 {
		errs = append(errs, fmt.Errorf("rise: must be 1 or more, got %d", c.Rise))
	}
	if c.Fall < 0 {
		errs = append(errs, fmt.Errorf("fall: must be 1 or more, got %d", c.Fall))
	}
	if c.RepinAfter < 0 {
		errs = append(errs, fmt.Errorf("repin_after: must not be negative, got %s", c.RepinAfter))
	}
	return errors.Join(errs...)
}

// Probe checks one node once; nil means healthy.
type Probe func(ctx context.Context, n balancer.Node) error

// SSHBannerProbe connects to the node's sshd and reads its version line
// ("SSH-2.0-…"), which proves sshd is accepting connections, not just that
// the port is open. It then sends its own version line and hangs up, so the
// node logs a plain pre-auth disconnect.
func SSHBannerProbe(dialer *net.Dialer) Probe {
	return func(ctx context.Context, n balancer.Node) error {
		conn, err := dialer.DialContext(ctx, "tcp", n.SSH)
		if err != nil {
			return err
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		_, err = ReadSSHBanner(bufio.NewReaderSize(conn, 256))
		if err != nil {
			return err
		}
		_, _ = conn.Write([]byte("SSH-2.0-poolgate_health\r\n"))
		return nil
	}
}

// ErrNoBanner means the peer did not send an SSH version line.
var ErrNoBanner = errors.New("no SSH version line")

// ReadSSHBanner reads lines until the SSH identification line (RFC 4253
// §4.2: the server may send other lines first) and returns it without its
// line ending. It reads at most 8 KiB and lines of at most 255 bytes.
func ReadSSHBanner(r *bufio.Reader) (string, error) {
	total := 0
	for total < 8192 {
		line, err := r.ReadSlice('\n')
		total += len(line)
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return "", fmt.Errorf("%w: line longer than 255 bytes", ErrNoBanner)
			}
			return "", fmt.Errorf("%w: %v", ErrNoBanner, err)
		}
		s := strings.TrimRight(string(line), "\r\n")
		if strings.HasPrefix(s, "SSH-") {
			if !strings.HasPrefix(s, "SSH-2.0-") && !strings.HasPrefix(s, "SSH-1.99-") {
				return "", fmt.Errorf("%w: unsupported protocol %q", ErrNoBanner, s)
			}
			return s, nil
		}
	}
	return "", fmt.Errorf("%w in the first 8 KiB", ErrNoBanner)
}

// StatusFunc adapts a function to StatusSetter.
type StatusFunc func(node string, proto balancer.Protocol, up bool, detail string)

// SetHealth calls f.
func (f StatusFunc) SetHealth(node string, proto balancer.Protocol, up bool, detail string) {
	f(node, proto, up, detail)
}

// HubHealthProbe asks the node's JupyterHub for GET /hub/health and wants
// 200. scheme is "http" or "https"; client carries the upstream TLS
// policy (CA, pins or skip-verify) the proxy itself uses. Nodes without an
// HTTP address are not probed by an HTTP checker (see NewHTTPChecker).
func HubHealthProbe(client *http.Client, scheme string) Probe {
	return func(ctx context.Context, n balancer.Node) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+n.HTTP+"/hub/health", nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "poolgate-health")
		resp, err := client.Do(req)
		if err != nil {
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err // the URL is in the log line's addr already
			}
			return fmt.Errorf("GET /hub/health: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /hub/health: %s", resp.Status)
		}
		return nil
	}
}

// Checker probes each node of the current set on an interval and reports
// to a StatusSetter. It is a NodeSetter: give it every node set. Create it
// with NewChecker; Run it once.
type Checker struct {
	cfg   atomic.Pointer[HealthConfig] // replaced whole by SetConfig
	probe Probe
	to    StatusSetter
	log   *zap.Logger

	results *prometheus.CounterVec // by check, node and result; nil: not counted
	check   string                 // its check label
	proto   balancer.Protocol      // which of the nodes' services it probes

	// mu protects ctx and targets.
	mu      sync.Mutex
	ctx     context.Context // set by Run; nil before
	targets map[string]*target
	wg      sync.WaitGroup // one per running target loop
}

type target struct {
	node   balancer.Node
	cancel context.CancelFunc
}

// CheckerOptions carries a checker's collaborators. The zero value is
// usable.
type CheckerOptions struct {
	// Probe checks one node; nil means SSHBannerProbe (NewChecker) or
	// HubHealthProbe over plain HTTP (NewHTTPChecker).
	Probe Probe
	// Logger receives state changes; nil means none.
	Logger *zap.Logger
	// Metrics, if set, is where the checker counts its probe results in
	// poolgate_health_checks_total{check,node,result}: check "ssh", "hub"
	// or "rdp" (one family that every checker on the registry shares),
	// result "ok" or "fail". A node's series of this check are deleted
	// when it leaves the pool. Nil means not counted.
	Metrics prometheus.Registerer
}

// NewChecker returns a checker of the nodes' sshd that reports to to.
func NewChecker(cfg HealthConfig, to StatusSetter, opts CheckerOptions) *Checker {
	if opts.Probe == nil {
		opts.Probe = SSHBannerProbe(&net.Dialer{})
	}
	return newChecker(cfg, to, opts, balancer.SSH)
}

// NewHTTPChecker returns a checker of the nodes' JupyterHubs: it probes
// only nodes with an HTTP address and reports to to (the balancer) for
// balancer.HTTP.
func NewHTTPChecker(cfg HealthConfig, to StatusSetter, opts CheckerOptions) *Checker {
	if opts.Probe == nil {
		opts.Probe = HubHealthProbe(&http.Client{}, "http")
	}
	return newChecker(cfg, to, opts, balancer.HTTP)
}

func newChecker(cfg HealthConfig, to StatusSetter, opts CheckerOptions, proto balancer.Protocol) *Checker {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Checker{probe: opts.Probe, to: to, log: log, proto: proto, targets: map[string]*target{}}
	cfg = cfg.WithDefaults()
	c.cfg.Store(&cfg)
	if opts.Metrics != nil {
		c.results, c.check = registerResults(opts.Metrics, proto), checkNames[proto]
	}
	return c
}

// checkNames are the values of the check label of
// poolgate_health_checks_total, by the protocol a checker probes.
var checkNames = map[balancer.Protocol]string{balancer.SSH: "ssh", balancer.HTTP: "hub", balancer.RDP: "rdp"}

// registerResults returns the probe-result counter of a checker of
// proto: poolgate_health_checks_total, one family for every checker,
// registered in reg by the first and shared by the others. (Not curried
// with the check: DeletePartialMatch ignores curried labels.)
func registerResults(reg prometheus.Registerer, proto balancer.Protocol) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "poolgate_health_checks_total",
		Help: "Node health probes, by check (ssh: the sshd banner, hub: JupyterHub /hub/health, rdp: an RDP Connection Request), node and result (ok or fail).",
	}, []string{"check", "node", "result"})
	if err := reg.Register(v); err != nil {
		var are prometheus.AlreadyRegisteredError
		existing, ok := v, false
		if errors.As(err, &are) {
			existing, ok = are.ExistingCollector.(*prometheus.CounterVec)
		}
		if !ok {
			panic(fmt.Sprintf("discovery: registering poolgate_health_checks_total: %v", err))
		}
		v = existing
	}
	return v
}

// SetNodes starts probing new nodes and stops probing nodes that left.
// A node whose addresses changed is probed afresh.
func (c *Checker) SetNodes(nodes []balancer.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := make(map[string]balancer.Node, len(nodes))
	for _, n := range nodes {
		if c.proto != balancer.SSH && c.proto.Addr(n) == "" { // every node has its own check
			continue
		}
		want[n.Name] = n
	}
	for name, t := range c.targets {
		if n, ok := want[name]; !ok || n != t.node {
			if t.cancel != nil {
				t.cancel()
			}
			delete(c.targets, name)
			if c.results != nil && !ok {
				c.results.DeletePartialMatch(prometheus.Labels{"check": c.check, "node": name})
			}
		}
	}
	for name, n := range want {
		if _, ok := c.targets[name]; !ok {
			c.targets[name] = &target{node: n}
			if c.ctx != nil {
				c.startLocked(c.targets[name])
			}
		}
	}
}

// SetConfig puts new health settings in force (a reload): each node's
// loop takes them at its next probe. The caller has checked them.
func (c *Checker) SetConfig(cfg HealthConfig) {
	cfg = cfg.WithDefaults()
	c.cfg.Store(&cfg)
}

// Run probes until ctx ends, then waits for every probe loop to finish.
func (c *Checker) Run(ctx context.Context) {
	c.mu.Lock()
	c.ctx = ctx
	for _, t := range c.targets {
		c.startLocked(t)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.wg.Wait()
}

func (c *Checker) startLocked(t *target) {
	ctx, cancel := context.WithCancel(c.ctx)
	t.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.loop(ctx, t.node)
	}()
}

// loop probes one node until ctx ends. The first result sets the state at
// once; after that Rise good or Fall bad probes in a row change it.
func (c *Checker) loop(ctx context.Context, n balancer.Node) {
	addr := c.proto.Addr(n)
	log := c.log.With(zap.String("node", n.Name), zap.String("addr", addr))
	defer func() {
		if r := recover(); r != nil {
			log.Error("health check loop panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	var known, up bool
	streak := 0
	cfg := c.cfg.Load()
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		if now := c.cfg.Load(); now != cfg { // a reload: from this probe on
			if now.Interval != cfg.Interval {
				tick.Reset(now.Interval)
			}
			cfg = now
		}
		pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := c.probe(pctx, n)
		cancel()
		if ctx.Err() != nil {
			return
		}
		ok := err == nil
		detail := "ok"
		if !ok {
			detail = err.Error()
		}
		if c.results != nil {
			result := "ok"
			if !ok {
				result = "fail"
			}
			c.results.WithLabelValues(c.check, n.Name, result).Inc()
		}
		if !known || ok == up {
			streak = 0
		} else {
			streak++
		}
		need := cfg.Rise
		if up {
			need = cfg.Fall
		}
		if !known || streak >= need {
			if !known || up != ok {
				if ok {
					log.Info("node up", zap.String("check", detail))
				} else {
					log.Info("node down", zap.String("check", detail))
				}
			}
			known, up, streak = true, ok, 0
		}
		// A failed probe that does not yet take an up node down says
		// nothing to the balancer: reporting "up" then would clear what
		// the front ends learnt (a dial that failed, NodeFailed). The
		// probe result counter above still counts it.
		if ok || !up {
			c.to.SetHealth(n.Name, c.proto, up, detail)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
