package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
	"github.com/poolgate/poolgate/gateway/httpgw"
	"github.com/poolgate/poolgate/gateway/identity"
	"github.com/poolgate/poolgate/gateway/keyvault"
	"github.com/poolgate/poolgate/gateway/recording"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

// Option adjusts how New builds a gateway.
type Option func(*options)

type options struct {
	azure    azure.Options
	keyVault keyvault.Options
	version  string
	// inherited and handover: see WithListeners, WithHandover.
	inherited []InheritedListener
	handover  io.ReadCloser
}

// WithVersion names the binary's version in poolgate_build_info (the
// default is "dev").
func WithVersion(v string) Option {
	return func(o *options) { o.version = v }
}

// WithAzure gives discovery.azure a credential, transport and retry
// settings of the caller's instead of the configured credential and the
// network (tests pass azuretest's fake credential, transport and
// NoRetry). The pool, grace, logger and HTTP setting are still the
// gateway's.
func WithAzure(ao azure.Options) Option {
	return func(o *options) { o.azure = ao }
}

// New builds a gateway from a validated config (see LoadConfig), in named
// steps: keys, shared state, balancer, discovery, load scraping, metrics,
// front ends and listeners. With discovery.azure it checks at once that
// the identity can read the scale set, so that a gateway without access
// stops with a clear message. On error, whatever the earlier steps opened
// is closed.
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
	g = &Gateway{cfg: cfg, log: log, reg: prometheus.NewRegistry(), retiring: make(chan struct{}), handover: o.handover}
	for _, in := range o.inherited {
		if g.inherited == nil {
			g.inherited = map[string]InheritedListener{}
		}
		g.inherited[in.Name] = in
	}
	built := g // g is nil once an error is returned
	defer func() {
		if err != nil {
			built.closeBuilt()
		}
	}()
	ca, caDesc, err := buildCA(context.Background(), cfg, countThrottling(g.reg, cfg, o.keyVault))
	if err != nil {
		return nil, err
	}
	if g.keys, err = sshgw.LoadKeysCA(cfg.StateDir, ca); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	log.Info("user CA ready", zap.String("ca", caDesc))
	if err = g.openSharedState(); err != nil {
		return nil, err
	}
	bo := balancer.Options{Logger: g.log.Named("balancer")}
	if g.shared != nil {
		bo.Shared = g.shared
	}
	g.bal = balancer.New(cfg.Balancer, bo)
	if err = g.buildDiscovery(o.azure); err != nil {
		return nil, err
	}
	if err = g.buildLoad(); err != nil {
		return nil, err
	}
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), admin.NewCollector(g.bal, g.bal))
	g.frontM = gwmetrics.New(g.reg)
	g.reg.MustRegister(buildInfo(o.version))
	if err = g.buildIdentity(); err != nil {
		return nil, err
	}
	if err = g.buildFrontEnds(); err != nil {
		return nil, err
	}
	if err = g.buildRDP(); err != nil {
		return nil, err
	}
	if err = g.listen(); err != nil {
		return nil, err
	}
	return g, nil
}

// buildInfo is poolgate_build_info: 1, labelled with the version and the
// Go release it was built with, for joins in queries and dashboards.
func buildInfo(version string) prometheus.Collector {
	if version == "" {
		version = "dev"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "poolgate_build_info",
		Help:        "Always 1; its labels name the running poolgate's version and the Go release that built it.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// openSharedState connects to Redis when state.redis is set. Redis that
// does not answer yet is no error: the balancer routes from its own view
// until it does.
func (g *Gateway) openSharedState() error {
	if !g.cfg.State.Enabled() {
		return nil
	}
	redisstate.SetLogger(g.log.Named("redis"))
	shared, err := redisstate.New(g.cfg.State)
	if err != nil {
		return fmt.Errorf("state.%w", err)
	}
	g.shared = shared
	// Every line of a gateway sharing state names it, for logs gathered
	// from several.
	g.log = g.log.With(zap.String("replica", shared.Replica()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if perr := shared.Ping(ctx); perr != nil {
		g.log.Warn("Redis does not answer yet; routing from this gateway's own view until it does", zap.String("redis", shared.Addr()), zap.Error(perr))
	} else {
		g.log.Info("routing state shared through Redis", zap.String("redis", shared.Addr()))
	}
	return nil
}

// buildDiscovery sets up the node source (the static list, or the Azure
// scale set, whose access is checked now) and the SSH health checks.
func (g *Gateway) buildDiscovery(ao azure.Options) error {
	cfg := g.cfg
	g.static = discovery.NewStaticSource(cfg.Discovery.Static)
	g.source = g.static
	if cfg.Discovery.Azure != nil {
		ao.Pool, ao.Grace, ao.Logger = g.bal, cfg.Balancer.AffinityGrace, g.log.Named("discovery.azure")
		ao.NoHTTP = !cfg.HTTP.Enabled()
		ao.RDP = cfg.RDP.Enabled() || cfg.RDP.Gateway.Enabled
		az, err := azure.New(*cfg.Discovery.Azure, ao)
		if err != nil {
			return err
		}
		g.azure = az
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := az.Check(ctx); err != nil {
			return err
		}
		g.source = az
		g.reg.MustRegister(admin.NewDiscoveryCollector(azureStatus(az)))
	}
	g.checker = discovery.NewChecker(cfg.Health, g.bal, discovery.CheckerOptions{
		Logger: g.log.Named("health_checker.active"), Metrics: g.reg,
	})
	return nil
}

// buildFrontEnds makes the SSH gateway, the admin API and, with
// http.listen, the HTTP gateway and its hub health checks, and lists the
// front ends for listen and Run.
func (g *Gateway) buildFrontEnds() error {
	cfg := g.cfg
	so := sshgw.Options{Keys: g.keys, Logger: g.log.Named("ssh"), Metrics: sshgw.NewMetrics(g.reg, g.frontM)}
	if g.identity != nil {
		so.Identity = g.identity
	}
	if cfg.Recording.Enabled {
		gw := cfg.State.Replica
		if gw == "" {
			gw, _ = os.Hostname()
		}
		ro := recording.Options{Logger: g.log.Named("recording"), Gateway: gw, Metrics: g.reg}
		if ab := cfg.Recording.AzureBlob; ab != nil {
			cred, err := keyVaultCredential(cfg.Discovery.Azure) // the gateway's Azure identity
			if err != nil {
				return fmt.Errorf("recording.azure_blob: the gateway's Azure identity: %w", err)
			}
			be, err := recording.NewBlob(*ab, cred, nil)
			if err != nil {
				return fmt.Errorf("recording.azure_blob: %w", err)
			}
			ro.Backend = be
		}
		st, err := recording.Open(cfg.Recording, ro)
		if err != nil {
			return err
		}
		g.recordings, so.Recorder = st, st
	}
	var starter httpgw.Starter
	if z := cfg.Discovery.Azure; g.azure != nil && z.ScaleFromZero.On() {
		so.Starter, starter = g.azure, g.azure
		if z.ScaleFromZero.ForPasswords() { // true; keys_only: proven users only
			so.PasswordStarts = &sshgw.StartLimit{Window: z.WithDefaults().StartTimeout}
		}
	}
	if g.azure != nil && cfg.Capacity.Enabled() {
		so.Busy = g.busy
	}
	srv, err := sshgw.New(cfg.SSH, g.bal, so)
	if err != nil {
		return fmt.Errorf("ssh: %w", err)
	}
	g.ssh = srv
	g.addFrontEnd(frontEnd{name: "ssh", addr: cfg.SSH.Listen, srv: srv, closed: sshgw.ErrServerClosed, vital: true})
	if err := g.buildRDGateway(); err != nil {
		return err
	}
	adminOpts := admin.Options{Logger: g.log.Named("admin"), Metrics: g.reg}
	if g.rdg != nil {
		adminOpts.RDPFiles = rdpFiles{g.rdg}
	}
	if g.recordings != nil {
		adminOpts.Recordings = g.recordings
	}
	if g.identity != nil {
		adminOpts.Identities = g.identity.b
		// The admin page's sign-in stays with this gateway (its own
		// address), so its cookie key is its own.
		adminOpts.SignIn = &identity.Web{Provider: g.identity.p, Name: "poolgate_ops", Key: identity.NewWebKey()}
	}
	if g.azure != nil {
		adminOpts.Discovery, adminOpts.Scaler = azureStatus(g.azure), AzureScaler(g.azure)
	}
	api, err := admin.New(cfg.Admin, g.bal, adminOpts)
	if err != nil {
		return fmt.Errorf("admin.%w", err)
	}
	g.api = api
	adminSrv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute}
	g.addFrontEnd(frontEnd{name: "admin", addr: cfg.Admin.Listen, srv: adminServer{adminSrv, g.log}, closed: http.ErrServerClosed, closeLast: true})
	if cfg.Admin.MetricsListen != "" {
		// Read-only, for Prometheus; it stays up through the drain, as the
		// admin API does.
		msrv := &http.Server{Handler: api.MetricsHandler(), TLSConfig: api.MetricsTLSConfig(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute}
		g.addFrontEnd(frontEnd{name: "metrics", key: "admin.metrics_listen", addr: cfg.Admin.MetricsListen, srv: metricsServer{msrv, g.log}, closed: http.ErrServerClosed, closeLast: true})
	}
	if !cfg.HTTP.Enabled() {
		return nil
	}
	users, err := g.userPage()
	if err != nil {
		return err
	}
	hopts := httpgw.Options{StateDir: cfg.StateDir, Logger: g.log.Named("http"), Starter: starter, Users: users,
		Metrics: g.frontM.Front(balancer.HTTP, gwmetrics.NoNode, gwmetrics.NodeUnreachable)}
	if g.rdg != nil {
		hopts.RDGateway = g.rdg
	}
	hs, err := httpgw.New(cfg.HTTP, g.bal, hopts)
	if err != nil {
		return fmt.Errorf("http.%w", err)
	}
	g.http = hs
	g.addFrontEnd(frontEnd{name: "http", addr: cfg.HTTP.Listen, srv: hs, closed: http.ErrServerClosed})
	g.hubCheck = discovery.NewHTTPChecker(cfg.Health, g.bal, discovery.CheckerOptions{
		Probe:   discovery.HubHealthProbe(hs.HealthClient(), hs.HealthScheme()),
		Logger:  g.log.Named("health_checker.hub"),
		Metrics: g.reg,
	})
	return nil
}

// closeBuilt closes what a failed New opened.
func (g *Gateway) closeBuilt() {
	g.closeListeners()
	if g.azure != nil {
		g.azure.Close()
	}
	if g.shared != nil {
		g.shared.Close()
	}
}
