package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/httpgw"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

// Gateway is a wired poolgate: balancer, discovery, health checks and the
// SSH front end. New binds the listeners, so that a busy port is reported
// at start; Run serves until its context ends.
type Gateway struct {
	cfg     Config
	log     *zap.Logger
	bal     *balancer.Balancer
	keys    *sshgw.Keys
	ssh     *sshgw.Server
	sshLn   net.Listener
	admin   *http.Server
	adminLn net.Listener
	checker *discovery.Checker
	source  discovery.Source

	http     *httpgw.Server // nil when http.listen is empty
	httpLn   net.Listener
	hubCheck *discovery.Checker
	azure    *azure.Source     // nil unless discovery.azure
	shared   *redisstate.Store // nil unless state.redis
}

// Option adjusts how New builds a gateway.
type Option func(*options)

type options struct {
	azure azure.Options
}

// WithAzure gives discovery.azure a credential, transport and retry
// settings of the caller's instead of the configured credential and the
// network (tests pass azuretest's fake credential, transport and
// NoRetry). The pool, grace, logger and HTTP setting are still the
// gateway's.
func WithAzure(ao azure.Options) Option {
	return func(o *options) { o.azure = ao }
}

// New builds a gateway from a validated config (see LoadConfig). With
// discovery.azure it checks at once that the identity can read the scale
// set, so that a gateway without access stops with a clear message.
func New(cfg Config, log *zap.Logger, opts ...Option) (g *Gateway, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	keys, err := sshgw.LoadKeys(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	var shared *redisstate.Store
	if cfg.State.Enabled() {
		if shared, err = redisstate.New(cfg.State, cfg.Balancer.AffinityGrace); err != nil {
			return nil, fmt.Errorf("state.%w", err)
		}
		defer func() {
			if err != nil {
				shared.Close()
			}
		}()
		// Every line of a gateway sharing state names it, for logs gathered
		// from several.
		log = log.With(zap.String("replica", shared.Replica()))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if perr := shared.Ping(ctx); perr != nil {
			log.Warn("Redis does not answer yet; routing from this gateway's own view until it does", zap.String("redis", shared.Addr()), zap.Error(perr))
		} else {
			log.Info("routing state shared through Redis", zap.String("redis", shared.Addr()))
		}
		cancel()
	}
	bal := balancer.New(cfg.Balancer, balancer.Options{Logger: log.Named("balancer")})
	if shared != nil {
		bal.SetShared(shared)
	}
	var source discovery.Source = discovery.Static(cfg.Discovery.Static)
	var az *azure.Source
	if cfg.Discovery.Azure != nil {
		ao := o.azure
		ao.Pool, ao.Grace, ao.Logger = bal, cfg.Balancer.AffinityGrace, log.Named("discovery.azure")
		ao.NoHTTP = !cfg.HTTP.Enabled()
		if az, err = azure.New(*cfg.Discovery.Azure, ao); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				az.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = az.Check(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
		source = az
	}
	srv, err := sshgw.New(cfg.SSH, keys, bal, log.Named("ssh"))
	if err != nil {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	reg := prometheus.NewRegistry()
	adminOpts := admin.Options{Logger: log.Named("admin"), Metrics: reg}
	if az != nil {
		adminOpts.Discovery, adminOpts.Scaler = azureStatus(az), AzureScaler(az)
	}
	api, err := admin.New(cfg.Admin, bal, adminOpts)
	if err != nil {
		return nil, fmt.Errorf("admin.%w", err)
	}
	var starter httpgw.Starter
	if az != nil && cfg.Discovery.Azure.ScaleFromZero {
		srv.SetStarter(az)
		starter = az
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), admin.NewCollector(bal, bal))
	if az != nil {
		reg.MustRegister(admin.NewDiscoveryCollector(azureStatus(az)))
	}
	srv.SetMetrics(sshgw.NewMetrics(reg))
	checker := discovery.NewChecker(cfg.Health, nil, bal, log.Named("health_checker.active"))
	healthResults := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "poolgate_health_checks_total", Help: "Node health probes, by node and result (ok or fail).",
	}, []string{"node", "result"})
	reg.MustRegister(healthResults)
	checker.CountResults(healthResults)
	g = &Gateway{
		cfg: cfg, log: log, bal: bal, keys: keys, ssh: srv,
		admin:   &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute},
		checker: checker,
		source:  source,
		azure:   az,
		shared:  shared,
	}
	if cfg.HTTP.Enabled() {
		hs, err := httpgw.New(cfg.HTTP, bal, httpgw.Options{StateDir: cfg.StateDir, Logger: log.Named("http"), Starter: starter})
		if err != nil {
			return nil, fmt.Errorf("http.%w", err)
		}
		g.http = hs
		g.hubCheck = discovery.NewHTTPChecker(cfg.Health, discovery.HubHealthProbe(hs.HealthClient(), hs.HealthScheme()),
			discovery.StatusFunc(bal.SetHTTPHealth), log.Named("health_checker.hub"))
		hubResults := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_hub_health_checks_total", Help: "JupyterHub /hub/health probes, by node and result (ok or fail).",
		}, []string{"node", "result"})
		reg.MustRegister(hubResults)
		g.hubCheck.CountResults(hubResults)
	}
	var lns []net.Listener
	listen := func(key, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		lns = append(lns, ln)
		return ln, nil
	}
	if g.sshLn, err = listen("ssh.listen", cfg.SSH.Listen); err != nil {
		return nil, err
	}
	if g.adminLn, err = listen("admin.listen", cfg.Admin.Listen); err != nil {
		return nil, err
	}
	if g.http != nil {
		if g.httpLn, err = listen("http.listen", cfg.HTTP.Listen); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// releaseShared tells the shared state, at a clean stop, that this
// gateway holds no session any more, so the other gateways' counts drop
// at once rather than after lease_ttl.
func (g *Gateway) releaseShared() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// An empty beat whose UpTo is above any lease ID this gateway made
	// (and exact in Lua's numbers, below 2^53) forgets all of them.
	const everyLease = 1 << 52
	if err := g.shared.Heartbeat(ctx, balancer.Beat{UpTo: everyLease}); err != nil {
		g.log.Warn("could not clear this gateway's sessions from Redis; they expire after lease_ttl", zap.Error(err))
	}
}

// azureStatus reports the scale set's discovery for the admin API.
func azureStatus(az *azure.Source) admin.Discovery {
	return func() admin.DiscoveryJSON {
		st := az.Status()
		d := admin.DiscoveryJSON{Source: "azure", Stale: st.Stale(), Error: st.Error, Instances: st.Instances, Live: st.Live, Starting: st.Starting}
		if !st.LastSuccess.IsZero() {
			t := st.LastSuccess.UTC()
			d.LastSuccess = &t
		}
		for name := range az.Protected() {
			d.Protected = append(d.Protected, name)
		}
		sort.Strings(d.Protected)
		return d
	}
}

// AzureScaler adapts the Azure source to the admin API's scale-in.
func AzureScaler(az *azure.Source) admin.Scaler { return scaler{az} }

type scaler struct{ az *azure.Source }

func (s scaler) ScaleIn(ctx context.Context, idle time.Duration, keep int, dryRun bool) (admin.ScaleInJSON, error) {
	res, err := s.az.ScaleIn(ctx, idle, keep, dryRun)
	return admin.ScaleInJSON{DryRun: res.DryRun, Deleted: scaleInNodes(res.Deleted), Kept: scaleInNodes(res.Kept)}, err
}

func scaleInNodes(ns []azure.ScaleInNode) []admin.ScaleInNodeJSON {
	out := make([]admin.ScaleInNodeJSON, 0, len(ns))
	for _, n := range ns {
		out = append(out, admin.ScaleInNodeJSON{Node: n.Node, InstanceID: n.InstanceID, Idle: n.Idle, Reason: n.Reason})
	}
	return out
}

// HTTPAddr is the address the HTTP gateway listens on, "" when it is off.
func (g *Gateway) HTTPAddr() string {
	if g.httpLn == nil {
		return ""
	}
	return g.httpLn.Addr().String()
}

// Reload re-reads what can change without a restart (SIGHUP): the HTTP
// gateway's TLS certificate.
func (g *Gateway) Reload() error {
	if g.http == nil {
		return nil
	}
	return g.http.Reload()
}

// SSHAddr is the address the SSH gateway listens on.
func (g *Gateway) SSHAddr() string { return g.sshLn.Addr().String() }

// AdminAddr is the address the admin API listens on.
func (g *Gateway) AdminAddr() string { return g.adminLn.Addr().String() }

// Balancer gives access to the routing state (for ops views and tests).
func (g *Gateway) Balancer() *balancer.Balancer { return g.bal }

// CALine is the line for the nodes' TrustedUserCAKeys file.
func (g *Gateway) CALine() string { return sshgw.AuthorizedCALine(g.keys.CA) }

// Run serves until ctx ends, then stops accepting, gives open sessions up
// to shutdown_timeout to end, closes the rest and returns. It returns nil
// after a requested stop, or the error that stopped it.
func (g *Gateway) Run(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	fan := discovery.Fanout{g.bal, g.checker}
	if g.hubCheck != nil {
		fan = append(fan, g.hubCheck)
		wg.Add(1)
		go func() { defer wg.Done(); g.hubCheck.Run(bg) }()
	}
	if g.shared != nil {
		wg.Add(2)
		go func() { defer wg.Done(); g.bal.RunShared(bg, g.shared.HeartbeatInterval()) }()
		go func() { defer wg.Done(); g.shared.Watch(bg, g.bal.ForgetPin, g.bal.SetPinNotices) }()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := g.source.Run(bg, fan); err != nil {
			g.log.Error("discovery stopped", zap.Error(err))
		}
	}()
	go func() { defer wg.Done(); g.checker.Run(bg) }()

	httpDone := make(chan struct{})
	if g.http != nil {
		go func() {
			defer close(httpDone)
			if err := g.http.Serve(g.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.log.Error("HTTP gateway stopped", zap.Error(err))
			}
		}()
	} else {
		close(httpDone)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- g.ssh.Serve(g.sshLn) }()
	adminDone := make(chan struct{})
	go func() {
		defer close(adminDone)
		g.log.Info("admin API listening", zap.String("addr", g.adminLn.Addr().String()))
		if err := g.admin.Serve(g.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("admin API stopped", zap.Error(err))
		}
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	g.log.Info("shutting down", zap.Duration("timeout", g.cfg.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	var hwg sync.WaitGroup
	if g.http != nil {
		hwg.Add(1)
		go func() {
			defer hwg.Done()
			if herr := g.http.Shutdown(sctx); herr != nil {
				_ = g.http.Close()
			}
		}()
	}
	if serr := g.ssh.Shutdown(sctx); serr != nil {
		g.log.Info("closed sessions still open at the shutdown timeout")
	}
	hwg.Wait()
	<-httpDone
	cancel()
	if err == nil {
		err = <-serveErr
	}
	_ = g.admin.Close()
	<-adminDone
	stopBG()
	wg.Wait()
	if g.shared != nil {
		g.releaseShared()
		_ = g.shared.Close()
	}
	if errors.Is(err, sshgw.ErrServerClosed) {
		return nil
	}
	return err
}
