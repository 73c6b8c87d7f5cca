package azure

import (
	"context"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
)

// Pool is what the source reads and changes in the balancer: session
// counts for protection and scale-in, drain for scale-in.
type Pool interface {
	Nodes() []balancer.NodeStatus
	Drain(name string) error
	Undrain(name string) error
	// SharedStatus says whether the counts come from state shared with
	// other gateways and whether that state is unreachable (degraded):
	// then the counts are this gateway's own sessions only.
	SharedStatus() (shared, degraded bool, replica string)
}

// partialView reports whether the pool's counts may miss other gateways'
// sessions just now: then nothing may be unprotected or deleted.
func (s *Source) partialView() bool {
	if s.pool == nil {
		return false
	}
	_, degraded, _ := s.pool.SharedStatus()
	return degraded
}

// Options carries a Source's collaborators. Only Pool is needed for
// protection, scale from zero and scale-in.
type Options struct {
	Pool Pool
	// Grace is the balancer's affinity grace: protection outlasts the
	// last session by this long. Zero means balancer.DefaultAffinityGrace.
	Grace time.Duration
	// Credential replaces the one the config names (tests inject a fake,
	// or a failing one). Nil builds the configured credential.
	Credential azcore.TokenCredential
	// Transport replaces the HTTPS transport to ARM (tests: the SDK's
	// fakes). Nil means the SDK's default.
	Transport policy.Transporter
	// Retry replaces the SDK retry settings (tests turn retries off).
	Retry *policy.RetryOptions
	// NoHTTP gives nodes no JupyterHub address, for a gateway whose HTTP
	// side is off (nothing would check or use it).
	NoHTTP bool
	// RDP gives nodes an RDP address (discovery.azure.rdp_port), for a
	// gateway whose RDP side is on; without it nodes have none.
	RDP    bool
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Intervals of the loop around the listing.
const (
	// syncEvery is how often protection and a starting node are checked
	// against the balancer between listings: session changes are local
	// and cheap to read.
	syncEvery = 2 * time.Second
	// startingPoll is the listing interval while a node is starting
	// (about 6 a minute, within ARM's limit for the costly listing).
	startingPoll = 10 * time.Second
	// minKickSpacing keeps requested early listings from adding up.
	minKickSpacing = 10 * time.Second
)

// Status is the discovery's state for ops.
type Status struct {
	// LastSuccess is when the scale set was last listed; zero if never.
	LastSuccess time.Time
	LastAttempt time.Time
	// Error is the last listing's error, "" when it succeeded. While it is
	// set, the node set is the last good one: stale.
	Error string
	// Instances and Live count the last good listing's VMs, and those
	// running with provisioning succeeded.
	Instances, Live int
	// Starting is set while scale from zero waits for a node.
	Starting bool
}

// Stale reports whether the node set is older than the last attempt.
func (st Status) Stale() bool { return st.Error != "" }

// Source discovers the live instances of one VM scale set. Create it with
// New; it is safe for concurrent use.
type Source struct {
	cfg    discovery.AzureConfig
	c      clients
	cred   azcore.TokenCredential
	limits *rateLimits
	pool   Pool
	grace  time.Duration
	noHTTP bool
	rdp    bool
	log    *zap.Logger
	now    func() time.Time

	kick chan struct{} // a listing is wanted soon (buffered, 1)

	// bg is the context of background ARM work (protection updates,
	// capacity, deletions); Close cancels it and waits on wg.
	bg     context.Context
	stopBG context.CancelFunc
	wg     sync.WaitGroup

	// ipMu protects ips, modeKnown and flexible.
	ipMu      sync.Mutex
	ips       map[string]string // lower-case VM resource ID → private IP
	modeKnown bool
	flexible  bool

	// mu protects status, last, lastStart, noIP and start.
	mu        sync.Mutex
	status    Status
	last      *listing  // last good listing; nil before the first
	lastStart time.Time // when the last good listing began
	noIP      map[string]bool
	start     startState

	prot protector
	capa capacityState
}

// New builds a source. It builds the credential but contacts nothing;
// Check does, at start.
func New(cfg discovery.AzureConfig, o Options) (*Source, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("discovery.azure.%w", err)
	}
	s := &Source{cfg: cfg, cred: o.Credential, limits: &rateLimits{}, pool: o.Pool, grace: o.Grace, noHTTP: o.NoHTTP, rdp: o.RDP, log: o.Logger, now: o.Now,
		kick: make(chan struct{}, 1), ips: map[string]string{}, noIP: map[string]bool{}}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.grace <= 0 {
		s.grace = balancer.DefaultAffinityGrace
	}
	if s.cred == nil {
		var err error
		if s.cred, err = newCredential(cfg); err != nil {
			return nil, fmt.Errorf("discovery.azure: setting up %s: %w", credentialSources(cfg), err)
		}
	}
	var err error
	if s.c, err = newClients(cfg.SubscriptionID, s.cred, clientOptions(o.Transport, o.Retry, s.limits)); err != nil {
		return nil, fmt.Errorf("discovery.azure: %w", err)
	}
	s.bg, s.stopBG = context.WithCancel(context.Background())
	s.prot.init()
	return s, nil
}

// Check proves at start that the identity gets a token and may read the
// scale set, so that a gateway without access stops with a message naming
// the credential sources tried and the role needed, instead of serving an
// empty pool. A throttled or failing ARM is not fatal: Run keeps trying.
func (s *Source) Check(ctx context.Context) error {
	if err := checkToken(ctx, s.cfg, s.cred); err != nil {
		return err
	}
	if _, err := s.orchestration(ctx); err != nil {
		switch statusOf(err) {
		case 401, 403, 404:
			return fmt.Errorf("discovery.azure: %w", err)
		}
		s.log.Warn("could not read the scale set at start; will keep trying", zap.Error(err))
	}
	return nil
}

// Status returns the discovery's state for ops.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Starting = s.start.active
	return st
}

// Instances returns the last good listing.
func (s *Source) Instances() []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		return nil
	}
	return append([]Instance(nil), s.last.instances...)
}

// Run lists the scale set every interval and pushes the live instances to
// to, until ctx ends. Between listings it keeps protection in step with
// the pool's sessions. It returns nil when ctx ends.
func (s *Source) Run(ctx context.Context, to discovery.NodeSetter) error {
	defer s.Close()
	syncT := time.NewTicker(syncEvery)
	defer syncT.Stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var next, notBefore time.Time // next listing; no listing before
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			wait, throttled := s.pollSafely(ctx, to)
			now := s.now()
			next = now.Add(wait)
			notBefore = now.Add(max(minKickSpacing, throttled))
			timer.Reset(wait)
		case <-s.kick:
			if at := notBefore; at.Before(next) {
				next = at
				timer.Reset(max(at.Sub(s.now()), 0))
			}
		case <-syncT.C:
			s.syncSafely()
		}
	}
}

// Close stops background ARM work and waits for it. Run calls it.
func (s *Source) Close() {
	s.stopBG()
	s.wg.Wait()
}

// poke asks Run for a listing soon (within the throttling rules).
func (s *Source) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// pollSafely runs poll, logging a panic rather than ending discovery.
func (s *Source) pollSafely(ctx context.Context, to discovery.NodeSetter) (wait, throttled time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("azure discovery panicked; will list again", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			wait = s.cfg.Interval
		}
	}()
	return s.poll(ctx, to)
}

func (s *Source) syncSafely() {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("azure protection sync panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	s.sync()
}

// poll lists the scale set once and pushes the node set, or keeps the last
// good one when ARM fails. It returns how long to wait before the next
// listing, and how much of that ARM's throttling asks for.
func (s *Source) poll(ctx context.Context, to discovery.NodeSetter) (wait, throttled time.Duration) {
	started := s.now()
	l, err := s.list(ctx)
	now := s.now()
	if err != nil {
		if ctx.Err() != nil {
			return s.cfg.Interval, 0
		}
		s.mu.Lock()
		first := s.status.Error == ""
		s.status.LastAttempt, s.status.Error = now, err.Error()
		since := s.status.LastSuccess
		s.mu.Unlock()
		throttled = retryAfter(err, now)
		switch {
		case throttled > 0:
			s.log.Warn("Azure throttled the scale-set listing; waiting as asked", zap.Duration("retry_after", throttled))
		case first && since.IsZero():
			s.log.Error("listing the scale set failed; the pool has no nodes until it succeeds", zap.Error(err))
		case first:
			s.log.Error("listing the scale set failed; keeping the last good node set", zap.Error(err), zap.Time("listed_at", since))
		}
	} else {
		nodes := s.nodesOf(l)
		s.mu.Lock()
		recovered, prevLive := s.status.Error != "", s.status.Live
		s.status = Status{LastSuccess: now, LastAttempt: now, Instances: len(l.instances), Live: len(nodes)}
		s.last, s.lastStart = &l, started
		s.mu.Unlock()
		if recovered {
			s.log.Info("listing the scale set works again")
		}
		if len(nodes) != prevLive || recovered {
			s.log.Info("scale set listed", zap.Int("instances", len(l.instances)), zap.Int("live", len(nodes)))
		}
		to.SetNodes(nodes)
		s.prot.observe(l, started, now, s.grace)
		s.sync()
	}
	if w := s.limits.take(); w > throttled {
		throttled = w
		s.log.Info("ARM's remaining quota is low; listing less often", zap.Duration("next_in", w))
	}
	base := s.cfg.Interval
	if s.Status().Starting {
		base = min(base, startingPoll)
	}
	return max(base, throttled), throttled
}

// nodesOf turns a listing's live instances into pool nodes. A live
// instance whose IP is not known is left out, and logged once.
func (s *Source) nodesOf(l listing) []balancer.Node {
	nodes := make([]balancer.Node, 0, len(l.instances))
	for _, in := range l.instances {
		if !in.Live {
			continue
		}
		if in.IP == "" {
			s.mu.Lock()
			warned := s.noIP[in.ResourceID]
			s.noIP[in.ResourceID] = true
			s.mu.Unlock()
			if !warned {
				s.log.Warn("running instance has no private IP yet; left out of the pool", zap.String("node", in.Name), zap.String("instance_id", in.ID))
			}
			continue
		}
		n := balancer.Node{Name: in.Name, SSH: net.JoinHostPort(in.IP, strconv.Itoa(s.cfg.SSHPort)), Weight: s.cfg.Weight}
		if !s.noHTTP {
			n.HTTP = net.JoinHostPort(in.IP, strconv.Itoa(s.cfg.HTTPPort))
		}
		if s.rdp {
			n.RDP = net.JoinHostPort(in.IP, strconv.Itoa(s.cfg.RDPPort))
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// sync brings protection and a starting node in step with the pool.
func (s *Source) sync() {
	if s.pool == nil {
		return
	}
	nodes := s.pool.Nodes()
	s.checkStarted(nodes)
	if s.cfg.ProtectBusyNodes {
		s.protectBusy(nodes)
	}
}
