package azure

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery/capacity"
)

// Leader says whether this gateway may act on the scale set's capacity
// now. Gateways that share state elect one through Redis (a lease with a
// fencing token: balancer/redisstate); a gateway alone always leads.
type Leader interface {
	// Lead takes or renews the lease; token rises with each new holder.
	Lead(ctx context.Context) (token int64, ok bool)
}

// CapacityOptions are the controller's collaborators.
type CapacityOptions struct {
	// Leader, when set, is asked before every decision; nil: this
	// gateway acts alone.
	Leader Leader
	// Saturated reports a node that takes no new user (at or over
	// load.max, or full); nil: none is.
	Saturated func(balancer.NodeStatus) bool
	// Metrics, when set, gets poolgate_scale_actions_total{reason}.
	Metrics prometheus.Registerer
}

// CapacityStatus is the controller's state for ops.
type CapacityStatus struct {
	On bool
	// Leading: this gateway acts (with several, one does).
	Leading bool
	// Spares: running nodes with no user and no pin; Starting:
	// instances asked for and not yet nodes.
	Spares, Starting int
	// WarmSpares is the spares wanted.
	WarmSpares int
	// LastAction is the last action's description and time.
	LastAction   string
	LastActionAt time.Time
	// Error is why the last decision could not be applied, "" if it was.
	Error string
}

// capacityState is the controller's memory. Protected by its own mutex.
type capacityState struct {
	mu           sync.Mutex
	cfg          capacity.Config
	on           bool
	leading      bool
	spares       int
	starting     int
	lastScaleOut time.Time
	raisedTo     int64     // the capacity last asked for
	raisedAt     time.Time // when; instances not listed yet count as starting until StartTimeout after
	lastAction   string
	lastActionAt time.Time
	err          string
	actions      *prometheus.CounterVec
}

// CapacityStatus reports the controller's state.
func (s *Source) CapacityStatus() CapacityStatus {
	c := &s.capa
	c.mu.Lock()
	defer c.mu.Unlock()
	return CapacityStatus{On: c.on, Leading: c.leading, Spares: c.spares, Starting: c.starting, WarmSpares: c.cfg.WarmSpares,
		LastAction: c.lastAction, LastActionAt: c.lastActionAt, Error: c.err}
}

// RunCapacity keeps the pool's capacity by cfg (capacity.Decide) until ctx
// ends: warm spares, a node more when every node is saturated, idle nodes
// removed by policy. It acts only while it leads, and never on a stale
// listing or a partial view of the sessions.
func (s *Source) RunCapacity(ctx context.Context, cfg capacity.Config, o CapacityOptions) {
	cfg = cfg.WithDefaults()
	if !cfg.Enabled() || s.pool == nil {
		return
	}
	c := &s.capa
	c.mu.Lock()
	c.cfg, c.on = cfg, true
	if o.Metrics != nil && c.actions == nil {
		c.actions = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_scale_actions_total",
			Help: "Capacity actions taken by this gateway, by reason: warm_spares, saturated, min_instances (instances started), idle (instances deleted).",
		}, []string{"reason"})
		for _, r := range []string{capacity.ReasonWarmSpares, capacity.ReasonSaturated, capacity.ReasonMinimum, capacity.ReasonIdle} {
			c.actions.WithLabelValues(r)
		}
		if err := o.Metrics.Register(c.actions); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				c.actions = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	c.mu.Unlock()
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		s.capacityOnce(ctx, cfg, o)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// capacityOnce makes one decision and applies it.
func (s *Source) capacityOnce(ctx context.Context, cfg capacity.Config, o CapacityOptions) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("capacity controller panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	c := &s.capa
	leading := true
	if o.Leader != nil {
		_, leading = o.Leader.Lead(ctx)
	}
	st, ok := s.capacityState(o)
	c.mu.Lock()
	c.leading, c.spares, c.starting = leading, spares(st), st.Starting
	c.mu.Unlock()
	if !leading || !ok {
		return
	}
	acts := capacity.Decide(cfg, st)
	var removes []capacity.Action
	for _, a := range acts {
		if a.Add > 0 {
			s.scaleOut(ctx, a, cfg)
		} else if a.Remove != "" {
			removes = append(removes, a)
		}
	}
	if len(removes) > 0 {
		s.scaleInIdle(ctx, cfg, st, removes)
	}
}

func spares(st capacity.State) int {
	n := st.Starting
	for _, nd := range st.Nodes {
		if nd.Sessions == 0 && nd.Pinned == 0 && !nd.Draining {
			n++
		}
	}
	return n
}

// capacityState is the pool as a decision sees it: the running instances
// that are nodes, and those starting. ok is false on a stale listing or a
// partial view of the sessions (nothing may be decided on those).
func (s *Source) capacityState(o CapacityOptions) (capacity.State, bool) {
	now := s.now()
	s.mu.Lock()
	last, stale := s.last, s.status.Error != ""
	s.mu.Unlock()
	if last == nil || stale || s.partialView() {
		return capacity.State{Now: now}, false
	}
	status := map[string]balancer.NodeStatus{}
	for _, n := range s.pool.Nodes() {
		status[n.Name] = n
	}
	c := &s.capa
	c.mu.Lock()
	st := capacity.State{Now: now, LastScaleOut: c.lastScaleOut}
	raisedTo, raisedAt := c.raisedTo, c.raisedAt
	c.mu.Unlock()
	listed := 0
	for _, in := range last.instances {
		if in.Power == "deallocated" || in.Power == "stopped" || in.Provisioning == "deleting" {
			continue
		}
		listed++
		ns, ok := status[in.Name]
		if !in.Live || !ok || ns.State != balancer.StateUp && ns.State != balancer.StateDraining {
			st.Starting++
			continue
		}
		n := capacity.Node{Name: in.Name, Sessions: ns.Sessions.Total(), Pinned: ns.Pinned, IdleSince: ns.IdleSince,
			Draining: ns.State == balancer.StateDraining}
		if o.Saturated != nil {
			n.Saturated = o.Saturated(ns)
		}
		st.Nodes = append(st.Nodes, n)
	}
	// Asked for and not listed yet (ARM creates them in the background).
	if raisedTo > int64(listed) && now.Sub(raisedAt) < s.cfg.StartTimeout {
		st.Starting += int(raisedTo) - listed
	}
	return st, true
}

// scaleOut raises the scale set's capacity by a.Add, within max_instances.
func (s *Source) scaleOut(ctx context.Context, a capacity.Action, cfg capacity.Config) {
	c := &s.capa
	err := func() error {
		set, err := s.c.sets.Get(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet, nil)
		if err != nil {
			return explain(s.cfg, "reading the scale set's capacity", err)
		}
		if set.SKU == nil {
			return errors.New("the scale set has no SKU; cannot raise its capacity")
		}
		from := int64(0)
		if set.SKU.Capacity != nil {
			from = *set.SKU.Capacity
		}
		want := min(from+int64(a.Add), int64(cfg.MaxInstances))
		if cfg.MaxInstances <= 0 {
			want = from + int64(a.Add)
		}
		if want <= from {
			return fmt.Errorf("the scale set's capacity is %d already, max_instances %d", from, cfg.MaxInstances)
		}
		sku := &armcompute.SKU{Name: set.SKU.Name, Tier: set.SKU.Tier, Capacity: to.Ptr(want)}
		if _, err := s.c.sets.BeginUpdate(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet, armcompute.VirtualMachineScaleSetUpdate{SKU: sku}, nil); err != nil {
			return explain(s.cfg, "raising the scale set's capacity", err)
		}
		now := s.now()
		what := fmt.Sprintf("started %d instance(s): %s", want-from, a.Reason)
		s.log.Info("capacity: scaling out", zap.String("reason", a.Reason), zap.Int64("from", from), zap.Int64("to", want))
		c.mu.Lock()
		c.lastScaleOut, c.raisedTo, c.raisedAt = now, want, now
		c.lastAction, c.lastActionAt, c.err = what, now, ""
		if c.actions != nil {
			c.actions.WithLabelValues(a.Reason).Add(float64(want - from))
		}
		c.mu.Unlock()
		s.poke()
		return nil
	}()
	if err != nil {
		s.capacityError("capacity: could not scale out", err)
	}
}

// scaleInIdle deletes the idle nodes Decide chose, through ScaleIn (which
// drains them and looks again, so a user arriving meanwhile keeps hers).
func (s *Source) scaleInIdle(ctx context.Context, cfg capacity.Config, st capacity.State, removes []capacity.Action) {
	live := 0
	for _, in := range s.Instances() {
		if in.Live {
			live++
		}
	}
	keep := int(math.Max(0, float64(live-len(removes))))
	res, err := s.ScaleIn(ctx, cfg.ScaleInIdle, keep, false)
	if err != nil {
		s.capacityError("capacity: could not scale in", err)
		return
	}
	if len(res.Deleted) == 0 {
		return
	}
	now := s.now()
	c := &s.capa
	c.mu.Lock()
	c.lastAction = fmt.Sprintf("deleted %d idle instance(s): idle for %s", len(res.Deleted), cfg.ScaleInIdle)
	c.lastActionAt, c.err = now, ""
	if c.actions != nil {
		c.actions.WithLabelValues(capacity.ReasonIdle).Add(float64(len(res.Deleted)))
	}
	c.mu.Unlock()
}

func (s *Source) capacityError(msg string, err error) {
	c := &s.capa
	c.mu.Lock()
	first := c.err != err.Error()
	c.err = err.Error()
	c.mu.Unlock()
	if first {
		s.log.Error(msg, zap.Error(err))
	}
}
