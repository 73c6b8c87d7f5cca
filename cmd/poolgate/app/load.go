package app

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure"
	"github.com/poolgate/poolgate/discovery/load"
)

// balancerLoad is the placement part of the section "load" (checked and
// defaulted there), for balancer.Config.Load.
func balancerLoad(c load.Config) balancer.LoadConfig {
	c = c.WithDefaults()
	return balancer.LoadConfig{Max: *c.Max, SessionCost: c.SessionCost, PackTarget: c.PackTarget, StaleAfter: c.StaleAfter()}
}

// loadTargets passes each node set to the scraper as its exporters: the
// addresses a node names, or, for nodes found by Azure discovery, the
// configured ports on the node's address.
type loadTargets struct {
	s                    *load.Scraper
	metricsPort, gpuPort int // 0: none; used for nodes that name no exporter
}

func (t loadTargets) SetNodes(nodes []balancer.Node) {
	t.s.SetTargets(targetsFor(nodes, t.metricsPort, t.gpuPort))
}

// targetsFor lists the exporters of nodes: those each names, else the
// ports given (0: none) on its sshd's address. Nodes without any are left
// out.
func targetsFor(nodes []balancer.Node, metricsPort, gpuPort int) []load.Target {
	targets := make([]load.Target, 0, len(nodes))
	for _, n := range nodes {
		tg := load.Target{Name: n.Name, Metrics: n.Metrics, GPUMetrics: n.GPUMetrics}
		host, _, err := net.SplitHostPort(n.SSH)
		if err == nil && tg.Metrics == "" && metricsPort > 0 {
			tg.Metrics = net.JoinHostPort(host, strconv.Itoa(metricsPort))
		}
		if err == nil && tg.GPUMetrics == "" && gpuPort > 0 {
			tg.GPUMetrics = net.JoinHostPort(host, strconv.Itoa(gpuPort))
		}
		if tg.Metrics != "" || tg.GPUMetrics != "" {
			targets = append(targets, tg)
		}
	}
	return targets
}

// toBalancerLoad turns a scrape into the balancer's figures (NaN for what
// was not measured).
func toBalancerLoad(s load.Sample) balancer.Load {
	v := func(p *float64) float64 {
		if p == nil {
			return balancer.Unknown
		}
		return *p
	}
	return balancer.Load{CPU: v(s.CPU), Memory: v(s.Memory), GPU: v(s.GPU), GPUMemory: v(s.GPUMemory), At: s.At}
}

// loadSink reports the scraper's samples and errors to the balancer.
type loadSink struct{ bal *balancer.Balancer }

func (s loadSink) SetLoad(node string, smp load.Sample) { s.bal.SetLoad(node, toBalancerLoad(smp)) }

// SetLoadError shows why the node's last scrape failed (nil: it did not).
func (s loadSink) SetLoadError(node string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.bal.SetLoadError(node, msg)
}

// buildLoad makes the scraper of the nodes' exporters, reporting to the
// balancer. Ports apply to Azure's instances only.
func (g *Gateway) buildLoad() error {
	lc := g.cfg.Load.WithDefaults()
	s, err := load.New(lc, loadSink{g.bal}, load.Options{Logger: g.log.Named("load")})
	if err != nil {
		return fmt.Errorf("load.%w", err)
	}
	g.load = s
	g.loadTargets = loadTargets{s: s}
	if g.cfg.Discovery.Azure != nil {
		g.loadTargets.metricsPort, g.loadTargets.gpuPort = *lc.MetricsPort, lc.GPUMetricsPort
	}
	return nil
}

// runLoad scrapes until ctx ends, and re-scores the nodes every interval
// so that figures that went stale stop counting.
func (g *Gateway) runLoad(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); g.load.Run(ctx) }()
	t := time.NewTicker(g.config().Load.WithDefaults().Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			g.load.CloseIdleConnections()
			return
		case <-t.C:
			g.bal.RefreshLoad()
		}
	}
}

var (
	_ discovery.NodeSetter = loadTargets{}
	_ load.Sink            = loadSink{}
)

// runCapacity runs the capacity controller on the scale set: alone, or
// with gateways sharing state, only while this one holds the lease.
func (g *Gateway) runCapacity(ctx context.Context) {
	o := azure.CapacityOptions{Metrics: g.reg, Saturated: g.saturated}
	if g.shared != nil {
		o.Leader = g.shared.Leader("capacity", time.Minute)
	}
	g.azure.RunCapacity(ctx, g.cfg.Capacity, o)
}

// saturated reports a node that takes no new user now: at or over
// load.max on its scarcest resource (fresh figures), or full.
func (g *Gateway) saturated(n balancer.NodeStatus) bool {
	cfg := g.config().Balancer
	if cfg.MaxSessionsPerNode > 0 && n.Sessions.Total() >= cfg.MaxSessionsPerNode {
		return true
	}
	if cfg.Load.Max <= 0 || !n.Load.Measured() || n.LoadStale {
		return false
	}
	return n.Load.Peak() >= cfg.Load.Max
}

// busy reports that node is saturated while the capacity controller
// starts another: the SSH user placed there is told so.
func (g *Gateway) busy(node string) bool {
	if g.azure.CapacityStatus().Starting == 0 {
		return false
	}
	for _, n := range g.bal.Nodes() {
		if n.Name == node {
			return g.saturated(n)
		}
	}
	return false
}
