package balancer

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"
)

// Shared is routing state kept with other gateways (pins, leases and drain
// flags in Redis, say), so that several gateways behind one load balancer
// route alike. The balancer stays the decision's owner of last resort:
// with a Shared set, Acquire claims the node there in one atomic step and
// records the lease locally too; when the shared state cannot be reached,
// it decides from its own view (degraded) and RunShared puts its sessions
// back once the shared state answers again.
type Shared interface {
	// Claim picks the node for a new session of c.User following the
	// routing rules over c.Nodes, and records the lease, atomically
	// across gateways. Claimed.Node is "" when no node can take it.
	Claim(ctx context.Context, c Claim) (Claimed, error)
	// Release ends a lease (Abort: one whose session never started).
	Release(ctx context.Context, r SharedRelease) error
	// Heartbeat refreshes this gateway's live leases, re-creating any the
	// shared state lost, and forgets the others it holds there (released,
	// or lost while degraded) as Beat says.
	Heartbeat(ctx context.Context, b Beat) error
	// Record puts one lease of this gateway in the shared state, on the
	// node given (a pinned user served from the local pin cache).
	Record(ctx context.Context, l LeaseRecord) error
	// Drain sets or clears the node's drain flag for every gateway.
	Drain(ctx context.Context, node string, on bool) error
	// View returns the whole pool's sessions and drain flags.
	View(ctx context.Context) (View, error)
	// Replica names this gateway among those sharing the state.
	Replica() string
}

// Claim is one Acquire's question to the shared state.
type Claim struct {
	User    string
	Proto   Protocol
	Client  string
	LeaseID uint64 // this gateway's lease ID
	// Nodes are this gateway's nodes with its health view: Up for the
	// protocol, Avoid when the front end could not reach it.
	Nodes              []Candidate
	Now                time.Time
	Grace              time.Duration
	MaxSessionsPerNode int
	// Rand in [0, 1) breaks ties among the least-loaded nodes.
	Rand float64
}

// Candidate is a node as one gateway sees it.
type Candidate struct {
	Name   string
	Weight float64
	Up     bool
	Avoid  bool
}

// Claimed is the shared state's answer to a Claim.
type Claimed struct {
	Node    string // "" when no node can take the session
	Lost    string // node the user's pin was moved from, reported once
	Created bool   // the claim created or moved the pin
}

// SharedRelease ends one lease in the shared state.
type SharedRelease struct {
	LeaseID uint64
	User    string
	Node    string
	// Abort: the session never started and its claim created the pin,
	// which goes (Lost, if set, is kept for the user's next session).
	Abort bool
	Lost  string
}

// Beat is one heartbeat: this gateway's live leases when it was taken.
// The shared state forgets the gateway's other leases, except claims that
// were under way (Pending) or began after it (IDs above UpTo).
type Beat struct {
	Leases  []LeaseRecord
	Pending []uint64
	UpTo    uint64
}

// LeaseRecord is one of this gateway's live leases, for Heartbeat.
type LeaseRecord struct {
	ID      uint64
	User    string
	Node    string
	Proto   Protocol
	Client  string
	Started time.Time
}

// View is the whole pool as the shared state holds it.
type View struct {
	Nodes    map[string]NodeView
	Sessions []SessionInfo // every gateway's, with Replica set
}

// NodeView is one node's share of a View.
type NodeView struct {
	Sessions  [2]int // by protocol: SSH, HTTP
	Users     []string
	Pinned    int
	Draining  bool
	IdleSince time.Time // when its last session ended; zero while it has some
}

// Timeouts of shared-state calls: a login waits at most claimTimeout
// before the balancer decides alone.
const (
	claimTimeout = 300 * time.Millisecond
	syncTimeout  = 2 * time.Second
	viewTTL      = 500 * time.Millisecond
	// degradedRetry is how often a degraded balancer tries the shared
	// state again.
	degradedRetry = time.Second
	// pinCacheTTL bounds how long a pin learnt from the shared state
	// serves a pinned user's picks locally; the shared state's pin
	// notices (ForgetPin) end it sooner. The cache serves only while the
	// notices are known to arrive (SetPinNotices).
	pinCacheTTL = 5 * time.Second
)

// pinEntry is a pin learnt from the shared state.
type pinEntry struct {
	node string
	at   time.Time
}

// SetShared makes the balancer share its routing state; call it before
// use, and run RunShared.
func (b *Balancer) SetShared(s Shared) {
	b.shared = s
	b.ops = make(chan func(context.Context) error, 4096)
	b.pending = map[uint64]bool{}
	b.pinCache = map[string]pinEntry{}
}

// SharedStatus reports whether state is shared, whether the shared state
// is unreachable (the balancer then serves from its own view), and this
// gateway's replica name.
func (b *Balancer) SharedStatus() (shared, degraded bool, replica string) {
	if b.shared == nil {
		return false, false, ""
	}
	return true, b.degraded.Load(), b.shared.Replica()
}

// acquireShared claims the node in the shared state. decided is false when
// the shared state could not be asked: the caller decides locally.
func (b *Balancer) acquireShared(user string, proto Protocol, client string, avoid []string) (l *Lease, err error, decided bool) {
	if b.degraded.Load() {
		return nil, nil, false
	}
	p := protoIndex(proto)
	b.mu.Lock()
	if l := b.fromPinCacheLocked(user, proto, client, avoid); l != nil {
		b.mu.Unlock()
		return l, nil, true
	}
	epoch := b.pinEpoch
	b.nextID++
	b.pending[b.nextID] = true
	c := Claim{
		User: user, Proto: proto, Client: client, LeaseID: b.nextID, Now: b.now(),
		Grace: b.cfg.AffinityGrace, MaxSessionsPerNode: b.cfg.MaxSessionsPerNode,
		Rand: float64(b.rand(1<<20)) / (1 << 20), Nodes: make([]Candidate, 0, len(b.order)),
	}
	for _, n := range b.order {
		c.Nodes = append(c.Nodes, Candidate{Name: n.Name, Weight: n.weight, Up: n.upFor(p), Avoid: slices.Contains(avoid, n.Name)})
	}
	b.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	res, err := b.shared.Claim(ctx, c)
	cancel()
	b.forgetView()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pending, c.LeaseID)
	if err != nil {
		b.setDegraded(err)
		return nil, nil, false
	}
	if res.Node == "" {
		return nil, ErrNoNode, true
	}
	if b.pinNotices && b.pinEpoch == epoch {
		// A notice that arrived while the claim was in flight may be
		// about this user: then the answer is not cached.
		b.pinCache[user] = pinEntry{node: res.Node, at: time.Now()}
	}
	n := b.nodes[res.Node]
	if n == nil { // left this gateway's pool since the claim
		b.queueRelease(SharedRelease{LeaseID: c.LeaseID, User: user, Node: res.Node, Abort: res.Created, Lost: res.Lost})
		return nil, ErrNoNode, true
	}
	u := b.userLocked(user)
	b.pinLocked(u, n)
	u.lost = res.Lost
	return b.grantLocked(u, proto, client, c.Now, res.Created, c.LeaseID), nil, true
}

// fromPinCacheLocked serves a pinned user from the local pin cache: the
// lease is granted at once on the cached node, if this gateway may use it,
// and recorded in the shared state in the background. It returns nil when
// the cache cannot answer.
func (b *Balancer) fromPinCacheLocked(user string, proto Protocol, client string, avoid []string) *Lease {
	e, ok := b.pinCache[user]
	if !ok || !b.pinNotices {
		return nil
	}
	if time.Since(e.at) > pinCacheTTL {
		delete(b.pinCache, user)
		return nil
	}
	n := b.nodes[e.node]
	if n == nil || !n.upFor(protoIndex(proto)) || slices.Contains(avoid, n.Name) {
		return nil
	}
	u := b.userLocked(user)
	b.pinLocked(u, n)
	u.lost = ""
	b.nextID++
	now := b.now()
	l := b.grantLocked(u, proto, client, now, false, b.nextID)
	rec := LeaseRecord{ID: l.id, User: user, Node: n.Name, Proto: proto, Client: client, Started: now}
	b.queue(func(ctx context.Context) error { return b.shared.Record(ctx, rec) })
	return l
}

// ForgetPin drops the user's cached pin: another gateway created or moved
// it (the shared state's notice), so the next pick asks the shared state.
func (b *Balancer) ForgetPin(user string) {
	b.mu.Lock()
	delete(b.pinCache, user)
	b.pinEpoch++
	b.mu.Unlock()
}

// SetPinNotices says whether the shared state's pin notices (ForgetPin)
// are arriving: true once a subscription is confirmed, false when it is
// lost. Either way the cached pins are dropped, since notices may have
// been missed; pins are cached only while notices arrive, so a gateway
// never routes a user from a pin another gateway has moved.
func (b *Balancer) SetPinNotices(live bool) {
	b.mu.Lock()
	clear(b.pinCache)
	b.pinNotices = live
	b.pinEpoch++
	b.mu.Unlock()
}

// prunePinCache drops cached pins past their TTL, so the cache holds
// only recently active users.
func (b *Balancer) prunePinCache() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for user, e := range b.pinCache {
		if time.Since(e.at) > pinCacheTTL {
			delete(b.pinCache, user)
		}
	}
}

// queueRelease hands a release to RunShared.
func (b *Balancer) queueRelease(r SharedRelease) {
	b.queue(func(ctx context.Context) error { return b.shared.Release(ctx, r) })
}

// queue hands an operation to RunShared. If the queue is full it is
// dropped: the next heartbeat puts the shared state right.
func (b *Balancer) queue(op func(context.Context) error) {
	select {
	case b.ops <- op:
	default:
	}
}

func (b *Balancer) setDegraded(err error) {
	if !b.degraded.Swap(true) {
		b.log.Error("shared state unreachable; routing from this gateway's own view until it answers", zap.Error(err))
	}
}

// RunShared keeps the shared state in step until ctx ends: it passes
// releases on, refreshes this gateway's leases every interval (once a
// second while degraded), and leaves degraded mode when the shared state
// answers, having put back every session this gateway holds.
func (b *Balancer) RunShared(ctx context.Context, interval time.Duration) {
	if b.shared == nil {
		return
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case op := <-b.ops:
			if b.degraded.Load() {
				continue // the next heartbeat puts the shared state right
			}
			rctx, cancel := context.WithTimeout(ctx, syncTimeout)
			err := op(rctx)
			cancel()
			b.forgetView()
			if err != nil && ctx.Err() == nil {
				b.setDegraded(err)
			}
		case <-t.C:
			b.heartbeat(ctx)
			if b.degraded.Load() {
				t.Reset(degradedRetry)
			} else {
				t.Reset(interval)
			}
		}
	}
}

func (b *Balancer) heartbeat(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("shared-state heartbeat panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	b.prunePinCache()
	beat := b.beat()
	hctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := b.shared.Heartbeat(hctx, beat); err != nil {
		if ctx.Err() == nil {
			b.setDegraded(err)
		}
		return
	}
	gen, at := b.viewGeneration(), time.Now()
	v, err := b.shared.View(hctx)
	if err != nil {
		if ctx.Err() == nil {
			b.setDegraded(err)
		}
		return
	}
	b.applyDrains(v)
	b.cacheView(v, gen, at)
	if b.degraded.Swap(false) {
		b.log.Info("shared state reachable again; this gateway's sessions put back", zap.Int("sessions", len(beat.Leases)))
	}
}

// beat lists this gateway's live leases and claims under way.
func (b *Balancer) beat() Beat {
	b.mu.RLock()
	defer b.mu.RUnlock()
	bt := Beat{Leases: make([]LeaseRecord, 0, len(b.leases)), Pending: make([]uint64, 0, len(b.pending)), UpTo: b.nextID}
	for _, l := range b.leases {
		bt.Leases = append(bt.Leases, LeaseRecord{ID: l.id, User: l.user, Node: l.node.Name, Proto: l.proto, Client: l.client, Started: l.started})
	}
	for id := range b.pending {
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

// forgetView drops the cached view after this gateway changed the shared
// state, so its own changes show at once; views fetched before then are
// not cached any more.
func (b *Balancer) forgetView() {
	b.viewMu.Lock()
	b.view = nil
	b.viewGen++
	b.viewMu.Unlock()
}

// viewGeneration is the cache's generation, taken before a fetch.
func (b *Balancer) viewGeneration() uint64 {
	b.viewMu.Lock()
	defer b.viewMu.Unlock()
	return b.viewGen
}

// cacheView keeps a view fetched from at on, unless the cache was
// invalidated since (gen) or holds a newer one.
func (b *Balancer) cacheView(v View, gen uint64, at time.Time) {
	b.viewMu.Lock()
	defer b.viewMu.Unlock()
	if gen != b.viewGen || (b.view != nil && at.Before(b.viewAt)) {
		return
	}
	b.view, b.viewAt = &v, at
}

// sharedView returns the whole pool's view, at most viewTTL old.
func (b *Balancer) sharedView() (View, error) {
	b.viewMu.Lock()
	defer b.viewMu.Unlock()
	if b.view != nil && time.Since(b.viewAt) < viewTTL {
		return *b.view, nil
	}
	at := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	v, err := b.shared.View(ctx)
	if err != nil {
		b.setDegraded(err)
		return View{}, err
	}
	b.view, b.viewAt = &v, at
	return v, nil
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
		n.SSHSessions, n.HTTPSessions = nv.Sessions[0], nv.Sessions[1]
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
	if err := b.shared.Drain(ctx, name, on); err != nil {
		b.setDegraded(err)
		return fmt.Errorf("the shared state did not take the drain, so it was not applied: %w", err)
	}
	b.forgetView()
	return nil
}
