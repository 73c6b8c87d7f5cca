package balancer

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// Drain stops new users from being placed on the node. Users pinned to it
// still reach it and existing sessions continue.
func (b *Balancer) Drain(name string) error { return b.setDrain(name, true) }

// Undrain lets the node take new users again.
func (b *Balancer) Undrain(name string) error { return b.setDrain(name, false) }

func (b *Balancer) setDrain(name string, on bool) error {
	if b.sh != nil {
		if err := b.drainShared(name, on); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownNode, name)
	}
	b.setDrainLocked(n, on)
	return nil
}

// Pin moves the user's pin to the named node, as ops choose (ByOps): the
// user's next sessions go there, SSH and browser alike; sessions open
// elsewhere go on. A user with no session keeps the pin for the affinity
// grace. An unknown, down or draining node is refused (ErrUnknownNode,
// ErrNodeDown, ErrDraining); a full node is not, ops know best.
func (b *Balancer) Pin(user, node string) error {
	b.mu.RLock()
	now := b.now()
	n := b.nodes[node]
	var err error
	switch {
	case n == nil:
		err = fmt.Errorf("%w %q", ErrUnknownNode, node)
	case !n.checks[own].up:
		err = fmt.Errorf("%w: %s", ErrNodeDown, node)
	case n.draining:
		if u := b.users[user]; u == nil || u.pin.Node != node || !b.pinHoldsLocked(u, now) {
			err = fmt.Errorf("%w: %s", ErrDraining, node)
		}
	}
	b.mu.RUnlock()
	if err != nil {
		return err
	}
	return b.movePin(user, node, ByOps, now)
}

// Choose moves the user's pin to the named node as the user chose it
// (ByUser), without a session: what `ssh alice+node-3@pool` does to the
// pin, for a front end where the user chooses with no session to lease
// (the users' page). The same rule 3a decides: the node must be one
// Choosable(user, proto) lists, else ErrUnknownNode, ErrNodeDown,
// ErrDraining or ErrNodeFull, wrapped with the node's name. The user's
// next sessions go there; sessions open elsewhere go on. A user with no
// session keeps the pin for the affinity grace.
func (b *Balancer) Choose(user, node string, proto Protocol) error {
	b.mu.RLock()
	now := b.now()
	_, err := decide(b.localFacts(proto, now), b.userPinLocked(user), query{proto: proto, named: node, by: ByUser, now: now})
	b.mu.RUnlock()
	if err != nil {
		return err
	}
	return b.movePin(user, node, ByUser, now)
}

// movePin sets the user's pin to node, chosen by by, in the shared state
// first when there is one, then in this gateway's copy.
func (b *Balancer) movePin(user, node string, by PinOrigin, now time.Time) error {
	set := func(old Pin) Pin { return pinChosen(old, node, by, now.Add(b.conf().AffinityGrace)) }
	if b.sh != nil {
		if err := b.setPinShared(user, set); err != nil {
			return fmt.Errorf("the shared state did not take the pin, so it was not applied: %w", err)
		}
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.userLocked(user)
	u.pin = set(u.pin)
	u.elsewhere = nil
	return nil
}

// pinChosen is the pin ops or the user set: on node, chosen by by,
// lasting at least until (longer if it already did, on the same node).
func pinChosen(old Pin, node string, by PinOrigin, until time.Time) Pin {
	if old.Node == node && old.Until.After(until) {
		until = old.Until
	}
	return Pin{Node: node, By: by, Until: until}
}

// Unpin drops the user's pin: their next session is placed by the
// routing rules again. Sessions open go on.
func (b *Balancer) Unpin(user string) error {
	if b.sh != nil {
		if err := b.setPinShared(user, func(Pin) Pin { return Pin{} }); err != nil {
			return fmt.Errorf("the shared state did not take the unpin, so it was not applied: %w", err)
		}
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if u := b.users[user]; u != nil {
		u.pin, u.elsewhere = Pin{}, nil
		if u.live == 0 {
			delete(b.users, user)
		}
	}
	return nil
}

// Pins lists the users with a pin that holds, by user name: with shared
// state, this gateway's copy of the pool's pins, with the whole pool's
// sessions.
func (b *Balancer) Pins() []PinInfo {
	var pool map[string]int // user → sessions, every gateway's
	if b.sh != nil && !b.sh.degraded.Load() {
		if v, err := b.sharedView(); err == nil {
			pool = map[string]int{}
			for _, s := range v.Sessions {
				pool[s.User]++
			}
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	now := b.now()
	var out []PinInfo
	for _, u := range b.users {
		if !b.pinHoldsLocked(u, now) {
			continue
		}
		p := PinInfo{User: u.name, Node: u.pin.Node, By: u.pin.By, Sessions: u.live, Elsewhere: append([]string(nil), u.elsewhere...)}
		if pool != nil {
			p.Sessions = max(p.Sessions, pool[u.name])
		}
		if p.By == "" {
			p.By = ByBalancer
		}
		if p.Sessions == 0 {
			p.Until = u.pin.Until
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

// setPinShared changes the user's pin in the shared state as set says,
// then in this gateway's copy.
func (b *Balancer) setPinShared(user string, set func(Pin) Pin) error {
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	var pin Pin
	ver, err := b.sh.store.Update(ctx, Read{Users: []string{user}, Now: b.now()}, func(s *Snapshot) (Change, error) {
		pin = set(s.Pins[user])
		if s.Live[user] > 0 && pin.Node != "" && pin.Until.Before(s.Now.Add(b.conf().AffinityGrace)) {
			pin.Until = s.Now.Add(b.conf().AffinityGrace)
		}
		return Change{Pins: map[string]Pin{user: pin}}, nil
	})
	if err != nil {
		b.setDegraded(err)
		return err
	}
	b.sh.view.forget()
	b.PinNotice(user, pin, ver)
	return nil
}

// AdoptPin sets the user's pin as another process had it (the gateway
// this one took over from in an upgrade): on node, chosen by by, holding
// until until, or a grace from now when until is zero (the user had
// sessions there). A user who holds a pin already keeps it; an unknown
// node is ignored (ErrUnknownNode): the user is placed afresh. It returns
// ErrShared with shared state, which holds the pins already.
func (b *Balancer) AdoptPin(user, node string, by PinOrigin, until time.Time) error {
	if b.sh != nil {
		return ErrShared
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nodes[node] == nil {
		return fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	now := b.now()
	if until.IsZero() {
		until = now.Add(b.conf().AffinityGrace)
	}
	if !until.After(now) {
		return nil
	}
	u := b.userLocked(user)
	if b.pinHoldsLocked(u, now) {
		return nil
	}
	if by == "" {
		by = ByBalancer
	}
	u.pin, u.elsewhere = Pin{Node: node, By: by, Until: until}, nil
	return nil
}
