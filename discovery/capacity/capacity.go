// Package capacity decides when a pool of nodes grows and shrinks: warm
// spares kept running with no users, a node started when every node is
// saturated, and idle nodes removed by policy. Decide is a pure function
// of the pool as the gateway sees it, so that the controller that acts on
// Azure and the simulation that measures the policy (bench/capacitysim)
// run the same rules.
package capacity

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Config is the YAML section "capacity". Everything is off by default.
type Config struct {
	// WarmSpares is how many running nodes with no user the pool keeps,
	// so that the next arrival never waits for a boot. 0: none.
	WarmSpares int `yaml:"warm_spares"`
	// MinInstances and MaxInstances bound the pool. MaxInstances 0 means
	// no scale-out at all.
	MinInstances int `yaml:"min_instances"`
	MaxInstances int `yaml:"max_instances"`
	// Cooldown is the least time between two scale-outs. Default 2m.
	Cooldown time.Duration `yaml:"cooldown"`
	// ScaleInIdle removes nodes idle this long (no session, no pin in its
	// grace), keeping WarmSpares and MinInstances. 0: never.
	ScaleInIdle time.Duration `yaml:"scale_in_idle"`
	// Interval between two decisions. Default 15s.
	Interval time.Duration `yaml:"interval"`
}

// DefaultCooldown is the Cooldown used when it is zero.
const DefaultCooldown = 2 * time.Minute

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.Cooldown == 0 {
		c.Cooldown = DefaultCooldown
	}
	if c.Interval == 0 {
		c.Interval = 15 * time.Second
	}
	return c
}

// Enabled reports whether the controller has anything to do.
func (c Config) Enabled() bool {
	return c.WarmSpares > 0 || c.MaxInstances > 0 || c.ScaleInIdle > 0
}

// Validate reports every bad setting, naming its key.
func (c Config) Validate() error {
	var errs []error
	for _, v := range []struct {
		key string
		n   int
	}{{"warm_spares", c.WarmSpares}, {"min_instances", c.MinInstances}, {"max_instances", c.MaxInstances}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", v.key, v.n))
		}
	}
	if c.MaxInstances > 0 && c.MinInstances > c.MaxInstances {
		errs = append(errs, fmt.Errorf("min_instances: %d is more than max_instances %d", c.MinInstances, c.MaxInstances))
	}
	if c.MaxInstances > 0 && c.WarmSpares > c.MaxInstances {
		errs = append(errs, fmt.Errorf("warm_spares: %d is more than max_instances %d", c.WarmSpares, c.MaxInstances))
	}
	if c.WarmSpares > 0 && c.MaxInstances == 0 {
		errs = append(errs, errors.New("warm_spares: needs max_instances, the most the pool may grow to"))
	}
	if c.Cooldown < 0 || c.ScaleInIdle < 0 || c.Interval < 0 {
		errs = append(errs, errors.New("cooldown, scale_in_idle, interval: must not be negative"))
	}
	if c.Interval > 0 && c.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval: %s is too short (at least 100ms)", c.Interval))
	}
	if c.ScaleInIdle > 0 && c.ScaleInIdle < time.Minute {
		errs = append(errs, fmt.Errorf("scale_in_idle: %s is shorter than a minute", c.ScaleInIdle))
	}
	return errors.Join(errs...)
}

// Node is one running node as the decision sees it.
type Node struct {
	Name string
	// Sessions and Pinned: its live sessions, and users pinned to it
	// (those in their grace too).
	Sessions, Pinned int
	// IdleSince is when its last session ended (zero while it has one).
	IdleSince time.Time
	// Saturated: it takes no new user (at or over load.max, or full).
	Saturated bool
	// Draining nodes take no new user and are no spare.
	Draining bool
}

// empty reports a node no one is on or coming back to.
func (n Node) empty() bool { return n.Sessions == 0 && n.Pinned == 0 && !n.Draining }

// State is the pool at one moment.
type State struct {
	Now   time.Time
	Nodes []Node
	// Starting counts instances asked for and not yet nodes (booting).
	Starting int
	// LastScaleOut is when the pool last grew (zero: never).
	LastScaleOut time.Time
}

// Reasons for actions (the label of poolgate_scale_actions_total).
const (
	ReasonWarmSpares = "warm_spares" // spares fell below capacity.warm_spares
	ReasonSaturated  = "saturated"   // every node is at load.max or full
	ReasonMinimum    = "min_instances"
	ReasonIdle       = "idle" // idle for capacity.scale_in_idle
)

// Action is one thing to do: start Add instances, or remove the node
// Remove.
type Action struct {
	Add    int
	Remove string
	Reason string
}

// Decide returns what to do now. At most one scale-out (of one or more
// instances) per cooldown; removals only of nodes idle for ScaleInIdle
// with no session and no pin, the longest idle first, never below
// MinInstances or the warm spares.
func Decide(cfg Config, st State) []Action {
	cfg = cfg.WithDefaults()
	total := len(st.Nodes) + st.Starting
	spares := st.Starting
	saturated := len(st.Nodes) > 0
	for _, n := range st.Nodes {
		if n.empty() {
			spares++
		}
		if !n.Saturated && !n.Draining {
			saturated = false
		}
	}
	var out []Action
	room := cfg.MaxInstances - total
	cooling := !st.LastScaleOut.IsZero() && st.Now.Sub(st.LastScaleOut) < cfg.Cooldown
	if room > 0 && !cooling {
		add, reason := 0, ""
		switch {
		case total < cfg.MinInstances:
			add, reason = cfg.MinInstances-total, ReasonMinimum
		case spares < cfg.WarmSpares:
			add, reason = cfg.WarmSpares-spares, ReasonWarmSpares
		case saturated && st.Starting == 0:
			add, reason = 1, ReasonSaturated
		}
		if add > 0 {
			out = append(out, Action{Add: min(add, room), Reason: reason})
		}
	}
	if cfg.ScaleInIdle <= 0 {
		return out
	}
	var idle []Node
	for _, n := range st.Nodes {
		if n.empty() && !n.IdleSince.IsZero() && st.Now.Sub(n.IdleSince) >= cfg.ScaleInIdle {
			idle = append(idle, n)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].IdleSince.Before(idle[j].IdleSince) })
	keepSpares := cfg.WarmSpares
	for _, n := range idle {
		if spares-1 < keepSpares || total-1 < cfg.MinInstances {
			break
		}
		out = append(out, Action{Remove: n.Name, Reason: ReasonIdle})
		spares--
		total--
	}
	return out
}
