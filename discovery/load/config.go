package load

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config is the YAML section "load": placing users by what the nodes
// really carry, read from the exporters ops already run on them
// (Prometheus node_exporter; NVIDIA dcgm-exporter for GPUs). It is the
// section's one type: its defaults and checks are here and nowhere else.
// Each part takes what it needs: the scraper Interval and Timeout; the
// balancer Max, SessionCost, PackTarget and StaleAfter (cmd copies them into
// balancer.LoadConfig, since the balancer imports no package of ours);
// cmd's exporter targets for Azure instances MetricsPort and
// GPUMetricsPort.
type Config struct {
	// Interval between two scrapes of a node. Default 5s; figures older
	// than three intervals are not used (StaleAfter).
	Interval time.Duration `yaml:"interval"`
	// Timeout of one scrape (connect, headers and body). Default 2s, and
	// never more than Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Max: a node at or above it on CPU (run queue per CPU), memory or GPU
	// takes no new user while another can. Default 0.9; 0 turns the
	// exclusion off (load still orders the nodes).
	Max *float64 `yaml:"max"`
	// SessionCost is what one session per weight adds to a node's score,
	// in the units of load. Default 0.1 (0 means the default).
	SessionCost float64 `yaml:"session_cost"`
	// PackTarget is, with balancer.placement pack, the fill up to which a
	// node is filled before an emptier one is started: the higher of its
	// scarcest measured resource (CPU, memory, GPU) and session_cost per
	// session. Default 0.8.
	PackTarget float64 `yaml:"pack_target"`
	// MetricsPort is node_exporter's port on each instance found by Azure
	// discovery. Default 9100; 0 means none. Static nodes name their
	// exporters (discovery.static[].metrics).
	MetricsPort *int `yaml:"metrics_port"`
	// GPUMetricsPort is dcgm-exporter's port on each Azure instance (its
	// default is 9400). Default 0: none.
	GPUMetricsPort int `yaml:"gpu_metrics_port"`
}

// The documented defaults of Config.
const (
	DefaultInterval    = 5 * time.Second
	DefaultTimeout     = 2 * time.Second // or Interval, if shorter
	DefaultMax         = 0.9
	DefaultSessionCost = 0.1
	DefaultPackTarget  = 0.8
	DefaultMetricsPort = 9100 // node_exporter's port
)

// WithDefaults fills unset fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultTimeout, c.Interval)
	}
	if c.Max == nil {
		m := DefaultMax
		c.Max = &m
	}
	if c.SessionCost == 0 {
		c.SessionCost = DefaultSessionCost
	}
	if c.PackTarget == 0 {
		c.PackTarget = DefaultPackTarget
	}
	if c.MetricsPort == nil {
		p := DefaultMetricsPort
		c.MetricsPort = &p
	}
	return c
}

// Validate reports every bad setting (joined, one error each), naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: must be positive, got %s", c.Interval))
	}
	if c.Interval > 0 && c.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval: %s is too short (at least 10ms)", c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: must be positive, got %s", c.Timeout))
	}
	if c.Timeout > c.WithDefaults().Interval {
		errs = append(errs, fmt.Errorf("timeout: %s is longer than interval %s", c.Timeout, c.WithDefaults().Interval))
	}
	if c.Max != nil && (*c.Max < 0 || bad(*c.Max)) {
		errs = append(errs, fmt.Errorf("max: must be 0 (off) or more, got %v", *c.Max))
	} else if c.Max != nil && *c.Max > 1 {
		errs = append(errs, fmt.Errorf("max: %v is more than 1: it is a fraction (0.9 = 90%% of CPU run queue per CPU, memory or GPU); write %v", *c.Max, fractionOf(*c.Max)))
	}
	if c.SessionCost < 0 || bad(c.SessionCost) {
		errs = append(errs, fmt.Errorf("session_cost: must be 0 (the default) or more, got %v", c.SessionCost))
	}
	if c.PackTarget < 0 || c.PackTarget > 1 || bad(c.PackTarget) {
		errs = append(errs, fmt.Errorf("pack_target: must be a fraction from 0 (the default, 0.8) to 1, got %v", c.PackTarget))
	}
	if c.MetricsPort != nil && (*c.MetricsPort < 0 || *c.MetricsPort > 65535) {
		errs = append(errs, fmt.Errorf("metrics_port: must be from 1 to 65535, or 0 for none; got %d", *c.MetricsPort))
	}
	if c.GPUMetricsPort < 0 || c.GPUMetricsPort > 65535 {
		errs = append(errs, fmt.Errorf("gpu_metrics_port: must be from 1 to 65535, or 0 for none; got %d", c.GPUMetricsPort))
	}
	return errors.Join(errs...)
}

// StaleAfter is the age at which a sample counts as missing: three
// intervals, so that one or two lost scrapes do not drop a node's load.
func (c Config) StaleAfter() time.Duration { return 3 * c.WithDefaults().Interval }

// fractionOf guesses the fraction meant by a value given as a percentage
// (90 → 0.9), for the message that asks for it.
func fractionOf(v float64) float64 {
	if v > 100 {
		return DefaultMax
	}
	return math.Round(v) / 100
}
