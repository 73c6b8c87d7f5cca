package azure

import (
	"context"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
)

// Azure takes about 4 updates a minute per VM; one every 15 s stays
// within it, and failures back off up to 5 minutes.
const (
	updateSpacing = 15 * time.Second
	maxBackoff    = 5 * time.Minute
)

// protector keeps ProtectFromScaleIn on instances whose node has sessions
// or users within the affinity grace, and off on the others.
//
// What it believes Azure holds comes from the listings, except that an
// update it made wins over a listing begun before the update finished.
// An update is sent only when the wanted state differs from that belief,
// so each change costs one call.
type protector struct {
	mu sync.Mutex // protects everything below
	// known: instance ID → ProtectFromScaleIn as Azure holds it.
	known map[string]bool
	// sentAt: when our last update of the instance finished.
	sentAt map[string]time.Time
	// notBefore: no update of the instance before then (spacing, back-off).
	notBefore map[string]time.Time
	failures  map[string]int
	inFlight  map[string]bool
	// keepUntil: instances found protected at start keep it one grace
	// period, as their users may still have kernels and jobs running
	// there and may come back.
	keepUntil map[string]time.Time
	seeded    bool
	// instances of the last listing: instance ID → node name, for those
	// whose provisioning succeeded (others cannot be updated).
	instances map[string]string
}

func (p *protector) init() {
	p.known = map[string]bool{}
	p.sentAt = map[string]time.Time{}
	p.notBefore = map[string]time.Time{}
	p.failures = map[string]int{}
	p.inFlight = map[string]bool{}
	p.keepUntil = map[string]time.Time{}
	p.instances = map[string]string{}
}

// observe takes in a listing begun at started.
func (p *protector) observe(l listing, started, now time.Time, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	present := make(map[string]string, len(l.instances))
	for _, in := range l.instances {
		if in.Provisioning != "succeeded" {
			continue
		}
		present[in.ID] = in.Name
		if sent, ok := p.sentAt[in.ID]; !ok || started.After(sent) {
			p.known[in.ID] = in.Protected
		}
		if !p.seeded && in.Protected {
			p.keepUntil[in.ID] = now.Add(grace)
		}
	}
	p.seeded = true
	for id := range p.known {
		if _, ok := present[id]; !ok && !p.inFlight[id] {
			delete(p.known, id)
			delete(p.sentAt, id)
			delete(p.notBefore, id)
			delete(p.failures, id)
			delete(p.keepUntil, id)
		}
	}
	p.instances = present
}

// protectBusy sends the updates that bring each instance's protection to
// what the pool's sessions want.
func (s *Source) protectBusy(nodes []balancer.NodeStatus) {
	busy := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		busy[n.Name] = n.Sessions.Total() > 0 || n.Pinned > 0
	}
	now := s.now()
	// With shared state unreachable the counts are this gateway's only:
	// protection may be added but not lifted.
	partial := s.partialView()
	p := &s.prot
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, name := range p.instances {
		want := busy[name] || now.Before(p.keepUntil[id])
		if want == p.known[id] || p.inFlight[id] || now.Before(p.notBefore[id]) || (partial && !want) {
			continue
		}
		p.inFlight[id] = true
		s.wg.Add(1)
		go s.updateProtection(id, name, want)
	}
}

// updateProtection sends one update and records its outcome.
func (s *Source) updateProtection(id, name string, on bool) {
	defer s.wg.Done()
	err := s.setProtection(s.bg, id, on)
	now := s.now()
	p := &s.prot
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inFlight, id)
	log := s.log.With(zap.String("node", name), zap.String("instance_id", id), zap.Bool("protect_from_scale_in", on))
	if err != nil {
		if s.bg.Err() != nil {
			return
		}
		p.failures[id]++
		wait := updateSpacing << min(p.failures[id]-1, 5)
		wait = min(max(wait, retryAfter(err, now)), maxBackoff)
		p.notBefore[id] = now.Add(wait)
		log.Error("setting scale-in protection failed; will retry", zap.Error(explain(s.cfg, "updating instance "+id, err)), zap.Duration("retry_in", wait))
		return
	}
	p.known[id] = on
	p.sentAt[id] = now
	p.notBefore[id] = now.Add(updateSpacing)
	delete(p.failures, id)
	if !on {
		delete(p.keepUntil, id)
	}
	log.Info("scale-in protection set")
}

// setProtection updates one instance with a body that holds only the
// protection policy: sending back the whole fetched model would change
// more than asked.
func (s *Source) setProtection(ctx context.Context, id string, on bool) error {
	body := armcompute.VirtualMachineScaleSetVM{Properties: &armcompute.VirtualMachineScaleSetVMProperties{
		ProtectionPolicy: &armcompute.VirtualMachineScaleSetVMProtectionPolicy{ProtectFromScaleIn: to.Ptr(on)},
	}}
	poller, err := s.c.vms.BeginUpdate(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet, id, body, nil)
	if err != nil {
		return err
	}
	_, err = poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: 5 * time.Second})
	return err
}

// Protected reports, by node name, the instances believed to carry
// ProtectFromScaleIn now.
func (s *Source) Protected() map[string]bool {
	p := &s.prot
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]bool{}
	for id, name := range p.instances {
		if p.known[id] {
			out[name] = true
		}
	}
	return out
}
