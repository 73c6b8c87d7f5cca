package balancer

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// sharedMode is what a balancer sharing its state (Options.Shared) keeps
// beside its own view. Its fields are under three regimes: pending and
// pins are protected by Balancer.mu; view has its own lock (see
// viewCache); ops and degraded are safe on their own.
type sharedMode struct {
	store    Shared
	ops      chan func(context.Context) error // releases and records, to RunShared
	degraded atomic.Bool                      // the shared state did not answer

	pending map[uint64]bool // lease IDs of claims under way; protected by Balancer.mu
	pins    pinCache        // protected by Balancer.mu
	view    viewCache
}

func newSharedMode(s Shared) *sharedMode {
	return &sharedMode{
		store:   s,
		ops:     make(chan func(context.Context) error, 4096),
		pending: map[uint64]bool{},
		pins:    newPinCache(),
	}
}

// SharedStatus reports whether state is shared, whether the shared state
// is unreachable (the balancer then serves from its own view), and this
// gateway's replica name.
func (b *Balancer) SharedStatus() (shared, degraded bool, replica string) {
	if b.sh == nil {
		return false, false, ""
	}
	return true, b.sh.degraded.Load(), b.sh.store.Replica()
}

// acquireShared claims the node in the shared state. decided is false when
// the shared state could not be asked: the caller decides locally.
func (b *Balancer) acquireShared(user string, proto Protocol, client string, avoid []string) (l *Lease, err error, decided bool) {
	sh := b.sh
	if sh.degraded.Load() {
		return nil, nil, false
	}
	p := protoIndex(proto)
	b.mu.Lock()
	if l := b.fromPinCacheLocked(user, proto, client, avoid); l != nil {
		b.mu.Unlock()
		return l, nil, true
	}
	epoch := sh.pins.epoch
	b.nextID++
	c := Claim{
		User: user, Proto: proto, Client: client, LeaseID: b.nextID, Now: b.now(),
		Grace: b.cfg.AffinityGrace, MaxSessionsPerNode: b.cfg.MaxSessionsPerNode, SessionCost: b.cfg.Load.SessionCost,
		Rand: float64(b.rand(1<<20)) / (1 << 20), Nodes: make([]Candidate, 0, len(b.order)),
	}
	for _, n := range b.order {
		c.Nodes = append(c.Nodes, Candidate{Name: n.Name, Weight: n.weight, Up: n.upFor(p), Avoid: slices.Contains(avoid, n.Name), Load: b.resourceScoreLocked(n)})
	}
	res, err := b.claimLocked(c)
	defer b.mu.Unlock()
	if err != nil {
		return nil, nil, false
	}
	if res.Node == "" {
		return nil, ErrNoNode, true
	}
	// A notice that arrived while the claim was in flight may be about
	// this user: then the answer is not cached.
	sh.pins.put(user, res.Node, b.now(), epoch)
	n := b.nodes[res.Node]
	if n == nil { // left this gateway's pool since the claim
		b.queueRelease(SharedRelease{LeaseID: c.LeaseID, User: user, Node: res.Node, Abort: res.Created, Lost: res.Lost})
		return nil, ErrNoNode, true
	}
	u := b.userLocked(user)
	b.pinLocked(u, n, res.By)
	u.lost = res.Lost
	return b.grantLocked(u, proto, client, c.Now, res.Created, c.LeaseID), nil, true
}

// claimLocked asks the shared state c. b.mu is held on entry and on
// return, and released for the round trip; c.LeaseID counts as a claim
// under way meanwhile (see beat). An error has set degraded mode.
func (b *Balancer) claimLocked(c Claim) (Claimed, error) {
	sh := b.sh
	sh.pending[c.LeaseID] = true
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	res, err := sh.store.Claim(ctx, c)
	cancel()
	sh.view.forget()
	b.mu.Lock()
	delete(sh.pending, c.LeaseID)
	if err != nil {
		b.setDegraded(err)
	}
	return res, err
}

// fromPinCacheLocked serves a pinned user from the local pin cache: the
// lease is granted at once on the cached node, if this gateway may use it,
// and recorded in the shared state in the background. It returns nil when
// the cache cannot answer.
func (b *Balancer) fromPinCacheLocked(user string, proto Protocol, client string, avoid []string) *Lease {
	now := b.now()
	name, ok := b.sh.pins.get(user, now)
	if !ok {
		return nil
	}
	n := b.nodes[name]
	if n == nil || !n.upFor(protoIndex(proto)) || slices.Contains(avoid, n.Name) {
		return nil
	}
	u := b.userLocked(user)
	b.pinLocked(u, n, ByBalancer)
	u.lost = ""
	b.nextID++
	l := b.grantLocked(u, proto, client, now, false, b.nextID)
	rec := LeaseRecord{ID: l.id, User: user, Node: n.Name, Proto: proto, Client: client, Started: now}
	b.queue(func(ctx context.Context) error { return b.sh.store.Record(ctx, rec) })
	return l
}

// ForgetPin drops the user's cached pin: another gateway created or moved
// it (the shared state's notice), so the next pick asks the shared state.
// It implements PinNotices.
func (b *Balancer) ForgetPin(user string) {
	if b.sh == nil {
		return
	}
	b.mu.Lock()
	b.sh.pins.forget(user)
	b.mu.Unlock()
}

// SetPinNotices says whether the shared state's pin notices (ForgetPin)
// are arriving: true once a subscription is confirmed, false when it is
// lost. Either way the cached pins are dropped, since notices may have
// been missed; pins are cached only while notices arrive, so a gateway
// never routes a user from a pin another gateway has moved. It implements
// PinNotices.
func (b *Balancer) SetPinNotices(live bool) {
	if b.sh == nil {
		return
	}
	b.mu.Lock()
	b.sh.pins.setLive(live)
	b.mu.Unlock()
}

// queueRelease hands a release to RunShared.
func (b *Balancer) queueRelease(r SharedRelease) {
	b.queue(func(ctx context.Context) error { return b.sh.store.Release(ctx, r) })
}

// queue hands an operation to RunShared. If the queue is full it is
// dropped: the next heartbeat puts the shared state right.
func (b *Balancer) queue(op func(context.Context) error) {
	select {
	case b.sh.ops <- op:
	default:
	}
}

func (b *Balancer) setDegraded(err error) {
	if !b.sh.degraded.Swap(true) {
		b.log.Error("shared state unreachable; routing from this gateway's own view until it answers", zap.Error(err))
	}
}

// RunShared keeps the shared state in step until ctx ends: it passes
// releases on, refreshes this gateway's leases every
// Shared.HeartbeatInterval (once a second while degraded), leaves
// degraded mode when the shared state answers, having put back every
// session this gateway holds, and follows the shared state's pin notices
// (Shared.Watch). Without shared state it returns at once.
func (b *Balancer) RunShared(ctx context.Context) {
	if b.sh == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.sh.store.Watch(ctx, b) }()
	defer wg.Wait()
	interval := b.sh.store.HeartbeatInterval()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case op := <-b.sh.ops:
			if b.sh.degraded.Load() {
				continue // the next heartbeat puts the shared state right
			}
			rctx, cancel := context.WithTimeout(ctx, syncTimeout)
			err := op(rctx)
			cancel()
			b.sh.view.forget()
			if err != nil && ctx.Err() == nil {
				b.setDegraded(err)
			}
		case <-t.C:
			b.heartbeat(ctx)
			if b.sh.degraded.Load() {
				t.Reset(degradedRetry)
			} else {
				t.Reset(interval)
			}
		}
	}
}

// LeaveShared tells the shared state, at a clean stop, that this gateway
// holds no session any more, so the other gateways' counts drop at once
// rather than when its leases expire. Call it once every session has
// ended and RunShared has returned. Without shared state it does nothing.
func (b *Balancer) LeaveShared(ctx context.Context) error {
	if b.sh == nil {
		return nil
	}
	if err := b.sh.store.Heartbeat(ctx, Beat{UpTo: everyLease}); err != nil {
		return fmt.Errorf("clearing this gateway's sessions from the shared state: %w", err)
	}
	return nil
}

func (b *Balancer) heartbeat(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("shared-state heartbeat panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	sh := b.sh
	b.mu.Lock()
	sh.pins.prune(b.now())
	b.mu.Unlock()
	beat := b.beat()
	hctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := sh.store.Heartbeat(hctx, beat); err != nil {
		if ctx.Err() == nil {
			b.setDegraded(err)
		}
		return
	}
	gen, at := sh.view.generation(), b.now()
	v, err := sh.store.View(hctx)
	if err != nil {
		if ctx.Err() == nil {
			b.setDegraded(err)
		}
		return
	}
	b.applyDrains(v)
	sh.view.keep(v, gen, at)
	if sh.degraded.Swap(false) {
		b.log.Info("shared state reachable again; this gateway's sessions put back", zap.Int("sessions", len(beat.Leases)))
	}
}

// beat lists this gateway's live leases and claims under way.
func (b *Balancer) beat() Beat {
	b.mu.RLock()
	defer b.mu.RUnlock()
	bt := Beat{Leases: make([]LeaseRecord, 0, len(b.leases)), Pending: make([]uint64, 0, len(b.sh.pending)), UpTo: b.nextID}
	for _, l := range b.leases {
		bt.Leases = append(bt.Leases, LeaseRecord{ID: l.id, User: l.user, Node: l.node.Name, Proto: l.proto, Client: l.client, Started: l.started})
	}
	for id := range b.sh.pending {
		bt.Pending = append(bt.Pending, id)
	}
	return bt
}

// applyDrains copies the shared drain flags into the local view, so that
// drains hold while degraded.
func (b *Balancer) applyDrains(v View) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, nv := range v.Nodes {
		if n := b.nodes[name]; n != nil && n.draining != nv.Draining {
			n.draining = nv.Draining
			n.changed = b.now()
			b.refreshLocked(n)
		}
	}
}

// sharedView returns the whole pool's view, at most viewTTL old.
func (b *Balancer) sharedView() (View, error) {
	return b.sh.view.get(b.now(), func() (View, error) {
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		defer cancel()
		v, err := b.sh.store.View(ctx)
		if err != nil {
			b.setDegraded(err)
		}
		return v, err
	})
}

// mergeShared puts the whole pool's counts, users, pins and drains into
// this gateway's node snapshot (health stays this gateway's own).
func mergeShared(local []NodeStatus, v View) []NodeStatus {
	for i := range local {
		n := &local[i]
		nv, ok := v.Nodes[n.Name]
		if !ok {
			nv = NodeView{}
		}
		n.SSHSessions, n.HTTPSessions, n.RDPSessions = nv.Sessions[0], nv.Sessions[1], nv.Sessions[2]
		n.Users = append([]string(nil), nv.Users...)
		sort.Strings(n.Users)
		n.Pinned = nv.Pinned
		n.IdleSince = nv.IdleSince
		if n.State != StateDown {
			n.State = StateUp
			if nv.Draining {
				n.State = StateDraining
			}
		}
	}
	return local
}

// drainShared sets a drain flag in the shared state, then locally.
func (b *Balancer) drainShared(name string, on bool) error {
	b.mu.RLock()
	_, known := b.nodes[name]
	b.mu.RUnlock()
	if !known {
		return fmt.Errorf("%w %q", ErrUnknownNode, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := b.sh.store.Drain(ctx, name, on); err != nil {
		b.setDegraded(err)
		return fmt.Errorf("the shared state did not take the drain, so it was not applied: %w", err)
	}
	b.sh.view.forget()
	return nil
}
