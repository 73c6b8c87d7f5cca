package azure

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
)

// startState is scale from zero in progress. Protected by Source.mu.
type startState struct {
	active bool
	began  time.Time
	until  time.Time // users stop waiting then
	// retryAt: after a failed start, no new one before then, so that
	// users arriving meanwhile are refused at once rather than kept
	// waiting for a start that cannot happen.
	retryAt time.Time
}

// startRetry is the pause after a failed start.
const startRetry = time.Minute

// StartNode is called by a front end when no node can take a user's
// session. With scale_from_zero on and no instance running, it raises the
// scale set's capacity (once, however many users wait) and reports until
// when the user may wait for the node; front ends call it again while
// they wait, and stop when it reports false. With instances running (the
// pool is full or draining, not empty), or after a failed start, it
// reports false.
func (s *Source) StartNode() (until time.Time, ok bool) {
	if !s.cfg.ScaleFromZero.On() {
		return time.Time{}, false
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.active {
		if now.Before(s.start.until) {
			return s.start.until, true
		}
		s.start.active = false
		s.log.Error("no node became ready within start_timeout", zap.Duration("start_timeout", s.cfg.StartTimeout))
	}
	switch {
	case s.last == nil:
		return time.Time{}, false // never listed: nothing known to act on
	case s.status.Live > 0:
		return time.Time{}, false // nodes run: full, draining or unhealthy, not empty
	case now.Before(s.start.retryAt):
		return time.Time{}, false
	}
	s.start = startState{active: true, began: now, until: now.Add(s.cfg.StartTimeout)}
	s.log.Info("a user arrived and no instance is running: starting one", zap.Int("min_capacity", s.cfg.MinCapacity))
	s.wg.Add(1)
	go s.raiseCapacity()
	return s.start.until, true
}

// raiseCapacity raises the scale set's capacity to min_capacity. A failure
// ends the start, so waiting users are told at once.
func (s *Source) raiseCapacity() {
	defer s.wg.Done()
	err := s.setCapacity(s.bg)
	if err == nil {
		s.poke()
		return
	}
	if s.bg.Err() != nil {
		return
	}
	s.log.Error("could not start a node", zap.Error(err))
	s.mu.Lock()
	s.start = startState{retryAt: s.now().Add(startRetry)}
	s.mu.Unlock()
}

// setCapacity brings the scale set to min_capacity running instances:
// instances that exist but are stopped or deallocated (an overnight
// shutdown, say) are started, since they count in the capacity already;
// the capacity is raised for the rest.
func (s *Source) setCapacity(ctx context.Context) error {
	set, err := s.c.sets.Get(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet, nil)
	if err != nil {
		return explain(s.cfg, "reading the scale set's capacity", err)
	}
	if set.SKU == nil {
		return errors.New("the scale set has no SKU; cannot raise its capacity")
	}
	capacity := int64(0)
	if set.SKU.Capacity != nil {
		capacity = *set.SKU.Capacity
	}
	want := int64(s.cfg.MinCapacity)
	var stopped []*string
	for _, in := range s.Instances() {
		if in.Provisioning == "succeeded" && (in.Power == "deallocated" || in.Power == "stopped") && int64(len(stopped)) < want {
			stopped = append(stopped, to.Ptr(in.ID))
		}
	}
	if len(stopped) > 0 {
		opts := &armcompute.VirtualMachineScaleSetsClientBeginStartOptions{VMInstanceIDs: &armcompute.VirtualMachineScaleSetVMInstanceIDs{InstanceIDs: stopped}}
		if _, err := s.c.sets.BeginStart(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet, opts); err != nil {
			return explain(s.cfg, "starting stopped instances", err)
		}
		s.log.Info("starting stopped instances", zap.Int("count", len(stopped)))
	}
	if capacity >= want {
		if len(stopped) == 0 {
			s.log.Info("the scale set's capacity is already enough; waiting for its instances to run", zap.Int64("capacity", capacity))
		}
		return nil
	}
	// The SKU's name and tier are sent back as read, so that only the
	// capacity changes.
	sku := &armcompute.SKU{Name: set.SKU.Name, Tier: set.SKU.Tier, Capacity: to.Ptr(want)}
	if _, err := s.c.sets.BeginUpdate(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet, armcompute.VirtualMachineScaleSetUpdate{SKU: sku}, nil); err != nil {
		return explain(s.cfg, "raising the scale set's capacity", err)
	}
	s.log.Info("raised the scale set's capacity", zap.Int64("from", capacity), zap.Int64("to", want))
	return nil
}

// checkStarted ends a start once a node is up.
func (s *Source) checkStarted(nodes []balancer.NodeStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.start.active {
		return
	}
	for _, n := range nodes {
		if n.State == balancer.StateUp {
			s.log.Info("node started and ready", zap.String("node", n.Name), zap.Duration("took", s.now().Sub(s.start.began)))
			s.start = startState{}
			return
		}
	}
}

// ScaleInNode is one instance in a scale-in answer.
type ScaleInNode struct {
	Node       string        `json:"node"`
	InstanceID string        `json:"instance_id"`
	IdleFor    time.Duration `json:"-"`
	Idle       string        `json:"idle,omitempty"`
	Reason     string        `json:"reason,omitempty"` // why it was kept
}

// ScaleInResult says what a scale-in deleted and what it kept, and why.
type ScaleInResult struct {
	DryRun  bool          `json:"dry_run"`
	Deleted []ScaleInNode `json:"deleted"`
	Kept    []ScaleInNode `json:"kept"`
}

// ErrStale means the last listing failed, so scale-in will not act on it.
var ErrStale = errors.New("the scale set's last listing failed; not deleting instances from a stale view")

// ErrPartialView means the shared state (Redis) does not answer, so the
// sessions through other gateways are unknown and nothing is deleted.
var ErrPartialView = errors.New("the shared state (Redis) does not answer, so other gateways' sessions are unknown; not deleting instances")

// ScaleIn deletes the running instances that have had no session for at
// least idle (and no user within the affinity grace), longest idle first,
// keeping at least keep running. Each is drained first and checked again,
// so a session that started meanwhile keeps its node. The deletion runs on
// in the background; nodes whose deletion fails are undrained. With dryRun
// it only says what it would do.
func (s *Source) ScaleIn(ctx context.Context, idle time.Duration, keep int, dryRun bool) (ScaleInResult, error) {
	res := ScaleInResult{DryRun: dryRun, Deleted: []ScaleInNode{}, Kept: []ScaleInNode{}}
	if s.pool == nil {
		return res, errors.New("scale-in needs the pool")
	}
	s.mu.Lock()
	last, stale := s.last, s.status.Error != ""
	s.mu.Unlock()
	if last == nil || stale {
		return res, ErrStale
	}
	if s.partialView() {
		return res, ErrPartialView
	}
	now := s.now()
	status := map[string]balancer.NodeStatus{}
	for _, n := range s.pool.Nodes() {
		status[n.Name] = n
	}
	var candidates []ScaleInNode
	running := 0
	for _, in := range last.instances {
		entry := ScaleInNode{Node: in.Name, InstanceID: in.ID}
		if !in.Live {
			entry.Reason = fmt.Sprintf("not running (%s, %s)", in.Provisioning, in.Power)
			res.Kept = append(res.Kept, entry)
			continue
		}
		running++
		st, ok := status[in.Name]
		switch {
		case !ok:
			entry.Reason = "not in the pool yet"
		case st.Sessions.Total() > 0:
			entry.Reason = fmt.Sprintf("has %d sessions", st.Sessions.Total())
		case st.Pinned > 0:
			entry.Reason = fmt.Sprintf("%d users within the affinity grace", st.Pinned)
		case st.IdleSince.IsZero() || now.Sub(st.IdleSince) < idle:
			entry.IdleFor = now.Sub(st.IdleSince)
			entry.Reason = fmt.Sprintf("idle for only %s", entry.IdleFor.Round(time.Second))
		default:
			entry.IdleFor = now.Sub(st.IdleSince)
			candidates = append(candidates, entry)
			continue
		}
		res.Kept = append(res.Kept, entry)
	}
	sort.SliceStable(candidates, func(i, j int) bool { return candidates[i].IdleFor > candidates[j].IdleFor })
	for i := range candidates {
		candidates[i].Idle = candidates[i].IdleFor.Round(time.Second).String()
		if running-len(res.Deleted) <= keep {
			candidates[i].Reason = fmt.Sprintf("keeping %d running", keep)
			res.Kept = append(res.Kept, candidates[i])
			continue
		}
		res.Deleted = append(res.Deleted, candidates[i])
	}
	if dryRun || len(res.Deleted) == 0 {
		return res, nil
	}

	// Drain, then look again: a user pinned by a session that began
	// between the first look and the drain keeps the node.
	wasDraining := map[string]bool{}
	for _, d := range res.Deleted {
		wasDraining[d.Node] = status[d.Node].State == balancer.StateDraining
		_ = s.pool.Drain(d.Node)
	}
	after := map[string]balancer.NodeStatus{}
	for _, n := range s.pool.Nodes() {
		after[n.Name] = n
	}
	var doomed []ScaleInNode
	var ids []*string
	for _, d := range res.Deleted {
		if st := after[d.Node]; st.Sessions.Total() > 0 || st.Pinned > 0 {
			s.undrain(d.Node, wasDraining)
			d.Reason = "a session started while it was being drained"
			res.Kept = append(res.Kept, d)
			continue
		}
		doomed = append(doomed, d)
		ids = append(ids, to.Ptr(d.InstanceID))
	}
	res.Deleted = doomed
	if len(doomed) == 0 {
		return res, nil
	}
	poller, err := s.c.sets.BeginDeleteInstances(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet,
		armcompute.VirtualMachineScaleSetVMInstanceRequiredIDs{InstanceIDs: ids}, nil)
	if err != nil {
		for _, d := range doomed {
			s.undrain(d.Node, wasDraining)
		}
		return res, explain(s.cfg, "deleting idle instances", err)
	}
	for _, d := range doomed {
		s.log.Info("deleting idle instance", zap.String("node", d.Node), zap.String("instance_id", d.InstanceID), zap.Duration("idle", d.IdleFor))
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_, err := poller.PollUntilDone(s.bg, &runtime.PollUntilDoneOptions{Frequency: 10 * time.Second})
		if err != nil && s.bg.Err() == nil {
			s.log.Error("deleting idle instances failed; undraining them", zap.Error(explain(s.cfg, "deleting idle instances", err)))
			for _, d := range doomed {
				s.undrain(d.Node, wasDraining)
			}
		}
		s.poke()
	}()
	return res, nil
}

// undrain lifts a drain that scale-in set, leaving one ops set alone.
func (s *Source) undrain(node string, wasDraining map[string]bool) {
	if !wasDraining[node] {
		_ = s.pool.Undrain(node)
	}
}
