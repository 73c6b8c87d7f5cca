package app

import (
	"context"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/load"
)

// LoadSection is the YAML section "load": placing users by what the nodes
// really carry, read from the exporters ops already run on them
// (Prometheus node_exporter; NVIDIA dcgm-exporter for GPUs).
type LoadSection struct {
	// Interval between two scrapes of a node. Default 5s; figures older
	// than three intervals are not used.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one scrape. Default 2s, and never more than Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Max: a node at or above it on CPU (run queue per CPU), memory or GPU
	// takes no new user while another can. Default 0.9; 0 turns the
	// exclusion off (load still orders the nodes).
	Max *float64 `yaml:"max"`
	// SessionCost is what one session per weight adds to a node's score,
	// in the units of load. Default 0.1.
	SessionCost float64 `yaml:"session_cost"`
	// MetricsPort is node_exporter's port on each instance found by Azure
	// discovery. Default 9100; 0 means none. Static nodes name their
	// exporters (discovery.static[].metrics).
	MetricsPort *int `yaml:"metrics_port"`
	// GPUMetricsPort is dcgm-exporter's port on each Azure instance (its
	// default is 9400). Default 0: none.
	GPUMetricsPort int `yaml:"gpu_metrics_port"`
}

// defaultMetricsPort is node_exporter's port.
const defaultMetricsPort = 9100

// WithDefaults fills unset fields with the documented defaults.
func (c LoadSection) WithDefaults() LoadSection {
	sc := c.scraper().WithDefaults()
	c.Interval, c.Timeout = sc.Interval, sc.Timeout
	if c.Max == nil {
		m := balancer.DefaultLoadMax
		c.Max = &m
	}
	if c.SessionCost == 0 {
		c.SessionCost = balancer.DefaultSessionCost
	}
	if c.MetricsPort == nil {
		p := defaultMetricsPort
		c.MetricsPort = &p
	}
	return c
}

// Validate reports the first bad setting, naming its key.
func (c LoadSection) Validate() error {
	if err := c.scraper().Validate(); err != nil {
		return err
	}
	switch {
	case c.Max != nil && (*c.Max < 0 || math.IsNaN(*c.Max) || math.IsInf(*c.Max, 0)):
		return fmt.Errorf("max: must be 0 (off) or more, got %v", *c.Max)
	case c.SessionCost < 0 || math.IsNaN(c.SessionCost) || math.IsInf(c.SessionCost, 0):
		return fmt.Errorf("session_cost: must be positive, got %v", c.SessionCost)
	case c.MetricsPort != nil && (*c.MetricsPort < 0 || *c.MetricsPort > 65535):
		return fmt.Errorf("metrics_port: must be from 1 to 65535, or 0 for none; got %d", *c.MetricsPort)
	case c.GPUMetricsPort < 0 || c.GPUMetricsPort > 65535:
		return fmt.Errorf("gpu_metrics_port: must be from 1 to 65535, or 0 for none; got %d", c.GPUMetricsPort)
	}
	return nil
}

func (c LoadSection) scraper() load.Config {
	return load.Config{Interval: c.Interval, Timeout: c.Timeout}
}

// balancer is the placement part, for balancer.Config.Load.
func (c LoadSection) balancer() balancer.LoadConfig {
	c = c.WithDefaults()
	return balancer.LoadConfig{Max: *c.Max, SessionCost: c.SessionCost, StaleAfter: c.scraper().StaleAfter()}
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

// buildLoad makes the scraper of the nodes' exporters, reporting to the
// balancer. Ports apply to Azure's instances only.
func (g *Gateway) buildLoad() error {
	lc := g.cfg.Load.WithDefaults()
	s, err := load.New(lc.scraper(), load.SinkFunc(func(node string, smp load.Sample) {
		g.bal.SetLoad(node, toBalancerLoad(smp))
	}), load.Options{Logger: g.log.Named("load")})
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
	t := time.NewTicker(g.cfg.Load.WithDefaults().Interval)
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

var _ discovery.NodeSetter = loadTargets{}
