package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/admin"
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
}

// New builds a gateway from a validated config (see LoadConfig).
func New(cfg Config, log *zap.Logger) (*Gateway, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	keys, err := sshgw.LoadKeys(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	bal := balancer.New(cfg.Balancer, balancer.Options{Logger: log.Named("balancer")})
	srv, err := sshgw.New(cfg.SSH, keys, bal, log.Named("ssh"))
	if err != nil {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	api, err := admin.New(cfg.Admin, bal, log.Named("admin"))
	if err != nil {
		return nil, fmt.Errorf("admin.%w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), admin.NewCollector(bal, bal))
	srv.SetMetrics(sshgw.NewMetrics(reg))
	checker := discovery.NewChecker(cfg.Health, nil, bal, log.Named("health_checker.active"))
	healthResults := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "poolgate_health_checks_total", Help: "Node health probes, by node and result (ok or fail).",
	}, []string{"node", "result"})
	reg.MustRegister(healthResults)
	checker.CountResults(healthResults)
	api.ServeMetrics(reg)
	ln, err := net.Listen("tcp", cfg.SSH.Listen)
	if err != nil {
		return nil, fmt.Errorf("ssh.listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	return &Gateway{
		cfg: cfg, log: log, bal: bal, keys: keys, ssh: srv, sshLn: ln, adminLn: adminLn,
		admin:   &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second},
		checker: checker,
		source:  discovery.Static(cfg.Discovery.Static),
	}, nil
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
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := g.source.Run(bg, discovery.Fanout{g.bal, g.checker}); err != nil {
			g.log.Error("discovery stopped", zap.Error(err))
		}
	}()
	go func() { defer wg.Done(); g.checker.Run(bg) }()

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
	if serr := g.ssh.Shutdown(sctx); serr != nil {
		g.log.Info("closed sessions still open at the shutdown timeout")
	}
	cancel()
	if err == nil {
		err = <-serveErr
	}
	_ = g.admin.Close()
	<-adminDone
	stopBG()
	wg.Wait()
	if errors.Is(err, sshgw.ErrServerClosed) {
		return nil
	}
	return err
}
