package balancer

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// SharedStatus reports whether state is shared, whether the shared state
// is unreachable (the balancer then serves from its own view), and this
// gateway's replica name.
func (b *Balancer) SharedStatus() (shared, degraded bool, replica string) {
	if b.sh == nil {
		return false, false, ""
	}
	return true, b.sh.degraded.Load(), b.sh.store.Replica()
}

// keepFor is how long a pin must last past a session the shared state
// records: the lease TTL (a gateway that dies stops refreshing) and the
// grace.
func (b *Balancer) keepFor() time.Duration { return b.sh.store.LeaseTTL() + b.conf().AffinityGrace }

// record puts one lease that was granted from the pin table into the
// shared state, keeping its user's pin there unless the pool agreed on
// another node meanwhile.
func (b *Balancer) record(ctx context.Context, rec LeaseRecord) error {
	_, err := b.keepLeases(ctx, []LeaseRecord{rec}, nil)
	return err
}

// release ends one lease in the shared state: the rules say what becomes
// of the user's pin there.
func (b *Balancer) release(ctx context.Context, r SharedRelease) error {
	if r.User == Unverified {
		_, err := b.sh.store.Update(ctx, Read{Now: b.now(), Without: []uint64{r.LeaseID}, Nodes: []string{r.Node}}, func(s *Snapshot) (Change, error) {
			ch := Change{Drop: []LeaseRecord{{ID: r.LeaseID, User: r.User, Node: r.Node, Proto: r.Proto}}}
			if s.Sessions[r.Node].Total() == 0 {
				ch.Idle = []string{r.Node}
			}
			return ch, nil
		})
		return err
	}
	var pin Pin
	ver, err := b.sh.store.Update(ctx, Read{Now: b.now(), Users: []string{r.User}, Without: []uint64{r.LeaseID}, Nodes: []string{r.Node}}, func(s *Snapshot) (Change, error) {
		var keep bool
		pin, keep = pinAfterRelease(s.Pins[r.User], r.Node, s.Live[r.User], r.Abort, r.Lost, s.Now, b.conf().AffinityGrace)
		if !keep {
			pin = Pin{}
		}
		ch := Change{Pins: map[string]Pin{r.User: pin}, Drop: []LeaseRecord{{ID: r.LeaseID, User: r.User, Node: r.Node, Proto: r.Proto}}}
		if s.Sessions[r.Node].Total() == 0 {
			ch.Idle = []string{r.Node}
		}
		return ch, nil
	})
	if err == nil {
		b.PinNotice(r.User, pin, ver)
	}
	return err
}

// keepLeases puts this gateway's leases in the shared state (refreshing
// their expiry) and holds each user's pin on the node of their session,
// unless a pin the pool agreed on first holds elsewhere: then the pin is
// left and the conflict reported (the user has sessions on two nodes,
// placed while the shared state was unreachable). drop, when not nil,
// says which of this gateway's leases there to forget.
func (b *Balancer) keepLeases(ctx context.Context, leases []LeaseRecord, drop func(LeaseRecord) bool) (conflicts map[string]conflict, err error) {
	users := make([]string, 0, len(leases))
	for _, l := range leases {
		if l.User != Unverified && !slices.Contains(users, l.User) {
			users = append(users, l.User)
		}
	}
	var pins map[string]Pin
	ver, err := b.sh.store.Update(ctx, Read{Now: b.now(), Users: users, Mine: drop != nil}, func(s *Snapshot) (Change, error) {
		pins, conflicts = map[string]Pin{}, map[string]conflict{}
		keep := s.Now.Add(b.keepFor())
		for _, l := range leases {
			if l.User == Unverified {
				continue // no pin (Hold)
			}
			old, ok := pins[l.User]
			if !ok {
				old = s.Pins[l.User]
			}
			p, split := pinWithSession(old, l.Node, s.Now, keep)
			if split {
				conflicts[l.User] = conflict{won: p.Node, session: l.Node}
			}
			pins[l.User] = p
		}
		for user, p := range pins {
			if p == s.Pins[user] {
				delete(pins, user)
			}
		}
		ch := Change{Pins: pins, Put: leases}
		if drop != nil {
			for _, m := range s.Mine {
				if drop(m) {
					ch.Drop = append(ch.Drop, m)
				}
			}
		}
		return ch, nil
	})
	if err != nil {
		return nil, err
	}
	for user, p := range pins {
		b.PinNotice(user, p, ver)
	}
	return conflicts, nil
}

// PinNotice takes a pin written to the shared state into this gateway's
// copy of the pin table, unless the copy already holds a newer version.
// It implements PinNotices.
func (b *Balancer) PinNotice(user string, p Pin, ver uint64) {
	if b.sh == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.takePinLocked(user, p, ver)
}

func (b *Balancer) takePinLocked(user string, p Pin, ver uint64) {
	u := b.users[user]
	switch {
	case u != nil && ver <= u.ver:
		return
	case u == nil && p.Node == "" && p.Lost == "":
		return
	case u == nil:
		u = b.userLocked(user)
	}
	if p.Node != u.pin.Node {
		u.elsewhere = nil
	}
	u.pin, u.ver = p, ver
}

// SetPinNotices says whether the shared state's pin notices are arriving:
// true once a subscription is confirmed, false when it is lost. Notices
// may have been missed before a subscription began, so pinned users are
// served from this gateway's copy of the pin table only once the whole
// table has been read within it (RunShared reads it at once), and until
// the subscription is lost. It implements PinNotices.
func (b *Balancer) SetPinNotices(live bool) {
	if b.sh == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sh.notices = false
	if live != (b.sh.subscribed%2 == 1) {
		b.sh.subscribed++
	}
	if live {
		select {
		case b.sh.resync <- struct{}{}:
		default:
		}
	}
}

// resyncPinTable reads the whole pin table after a subscription began,
// and serves pinned users from the copy if the subscription still holds.
func (b *Balancer) resyncPinTable(ctx context.Context) {
	b.mu.RLock()
	sub := b.sh.subscribed
	b.mu.RUnlock()
	if sub%2 == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := b.readPinTable(rctx); err != nil {
		if ctx.Err() == nil {
			b.setDegraded(err)
		}
		return
	}
	b.mu.Lock()
	b.sh.notices = b.sh.subscribed == sub
	b.mu.Unlock()
}

// queueRelease hands a release to RunShared.
func (b *Balancer) queueRelease(r SharedRelease) {
	b.queue(func(ctx context.Context) error { return b.release(ctx, r) })
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
		b.log.Error("shared state unreachable; routing from this gateway's copy of the pool's pins until it answers", zap.Error(err))
	}
}

// RunShared keeps the shared state in step until ctx ends: it passes
// releases on, refreshes this gateway's leases and reads the whole pin
// table every third of Shared.LeaseTTL (once a second while degraded),
// leaves degraded mode when the shared state answers, having put back
// every session this gateway holds, and follows the shared state's pin
// notices (Shared.Watch). Without shared state it returns at once.
func (b *Balancer) RunShared(ctx context.Context) {
	if b.sh == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.sh.store.Watch(ctx, b) }()
	defer wg.Wait()
	interval := b.sh.store.LeaseTTL() / 3
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.sh.resync:
			b.resyncPinTable(ctx)
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
	if _, err := b.keepLeases(ctx, nil, func(LeaseRecord) bool { return true }); err != nil {
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
	leases, pending, upTo := b.beat()
	hctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	live := make(map[uint64]bool, len(leases))
	for _, l := range leases {
		live[l.ID] = true
	}
	conflicts, err := b.keepLeases(hctx, leases, func(m LeaseRecord) bool {
		return !pending[m.ID] && m.ID <= upTo && !live[m.ID]
	})
	if err == nil {
		err = b.readPinTable(hctx)
		b.reconciled(conflicts)
	}
	var v View
	gen, at := sh.view.generation(), b.now()
	if err == nil {
		v, err = sh.store.View(hctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			b.setDegraded(err)
		}
		return
	}
	b.applyDrains(v)
	sh.view.put(v, gen, at)
	if sh.degraded.Swap(false) {
		b.mu.Lock()
		clear(sh.alone)
		b.mu.Unlock()
		b.log.Info("shared state reachable again; this gateway's sessions put back and its pins reconciled", zap.Int("sessions", len(leases)))
	}
}

// conflict is a user's session through this gateway on another node than
// the pin the pool agreed on first.
type conflict struct{ won, session string }

// reconciled reports users whose session through this gateway is on
// another node than the pin the pool agreed on first (both were chosen
// while the shared state was unreachable): the pool's pin wins, the
// session goes on, and ops see both (Pins' Elsewhere).
func (b *Balancer) reconciled(conflicts map[string]conflict) {
	if len(conflicts) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for user, c := range conflicts {
		u := b.users[user]
		if u == nil || slices.Contains(u.elsewhere, c.session) {
			continue
		}
		u.elsewhere = append(u.elsewhere, c.session)
		sort.Strings(u.elsewhere)
		b.log.Warn("two gateways placed a user on different nodes while the shared state was unreachable; the pool's first choice wins",
			zap.String("user", user), zap.String("node", c.won), zap.String("sessions_also_on", c.session))
	}
}

// readPinTable replaces this gateway's copy of the pin table with the
// shared state's, keeping what is newer here (a notice that overtook the
// read) and the pins of this gateway's own sessions.
func (b *Balancer) readPinTable(ctx context.Context) error {
	now := b.now()
	table, err := b.sh.store.PinTable(ctx, now)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for user, vp := range table {
		b.takePinLocked(user, vp.Pin, vp.Ver)
	}
	for name, u := range b.users {
		if _, ok := table[name]; !ok && u.live == 0 && !b.pinHoldsLocked(u, now) {
			delete(b.users, name)
		}
	}
	return nil
}

// beat lists this gateway's live leases, the claims under way and the
// highest lease ID given out.
func (b *Balancer) beat() (leases []LeaseRecord, pending map[uint64]bool, upTo uint64) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	leases = make([]LeaseRecord, 0, len(b.leases))
	for _, l := range b.leases {
		leases = append(leases, LeaseRecord{ID: l.id, User: l.user, Node: l.node.Name, Proto: l.proto, Client: l.client, Started: l.started})
	}
	return leases, maps.Clone(b.sh.pending), b.nextID
}

// applyDrains copies the shared drain flags into the local view, so that
// drains hold while degraded.
func (b *Balancer) applyDrains(v View) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, nv := range v.Nodes {
		if n := b.nodes[name]; n != nil {
			b.setDrainLocked(n, nv.Draining)
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
		nv := v.Nodes[n.Name]
		n.Sessions = nv.Sessions
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
	_, err := b.sh.store.Update(ctx, Read{Now: b.now(), Placing: true}, func(*Snapshot) (Change, error) {
		return Change{Drain: map[string]bool{name: on}}, nil
	})
	if err != nil {
		b.setDegraded(err)
		return fmt.Errorf("the shared state did not take the drain, so it was not applied: %w", err)
	}
	b.sh.view.forget()
	return nil
}
