package balancer

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// PinInfo is one user's pin, for ops.
type PinInfo struct {
	User     string
	Node     string
	By       PinOrigin
	Sessions int // the user's live sessions, on any node
	// Until is when the pin ends unless a session opens; zero while the
	// user has sessions.
	Until time.Time
}

// PinChange is an ops pin or unpin, for the shared state.
type PinChange struct {
	User string
	Node string // "" unpins
	// Until is when the pin ends if no session opens (now + grace); a
	// pin that lasts longer already keeps its end.
	Until time.Time
}

// Pin moves the user's pin to the named node, as ops choose (ByOps): the
// user's next sessions go there, SSH and browser alike; sessions open
// elsewhere go on. A user with no session keeps the pin for the affinity
// grace. An unknown, down or draining node is refused (ErrUnknownNode,
// ErrNodeDown, ErrDraining); a full node is not, ops know best.
func (b *Balancer) Pin(user, node string) error {
	b.mu.RLock()
	n := b.nodes[node]
	var err error
	switch {
	case n == nil:
		err = fmt.Errorf("%w %q", ErrUnknownNode, node)
	case !n.up:
		err = fmt.Errorf("%w: %s", ErrNodeDown, node)
	case n.draining:
		if u := b.users[user]; u == nil || u.node != n {
			err = fmt.Errorf("%w: %s", ErrDraining, node)
		}
	}
	b.mu.RUnlock()
	if err != nil {
		return err
	}
	if b.sh != nil {
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		defer cancel()
		if err := b.sh.store.SetPin(ctx, PinChange{User: user, Node: node, Until: b.now().Add(b.cfg.AffinityGrace)}); err != nil {
			b.setDegraded(err)
			return fmt.Errorf("the shared state did not take the pin, so it was not applied: %w", err)
		}
		b.sh.view.forget()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n = b.nodes[node]; n == nil {
		return fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	if b.sh != nil {
		b.sh.pins.forget(user)
	}
	u := b.userLocked(user)
	b.pinLocked(u, n, ByOps)
	u.by, u.lost = ByOps, ""
	if u.live == 0 {
		u.idleSince = b.now()
	}
	return nil
}

// Unpin drops the user's pin: their next session is placed by the
// routing rules again. Sessions open go on.
func (b *Balancer) Unpin(user string) error {
	if b.sh != nil {
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		defer cancel()
		if err := b.sh.store.SetPin(ctx, PinChange{User: user}); err != nil {
			b.setDegraded(err)
			return fmt.Errorf("the shared state did not take the unpin, so it was not applied: %w", err)
		}
		b.sh.view.forget()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sh != nil {
		b.sh.pins.forget(user)
	}
	if u := b.users[user]; u != nil && u.node != nil {
		delete(u.node.pinned, user)
		u.node, u.by = nil, ""
	}
	return nil
}

// Pins lists the users with a live pin, by user name: with shared state,
// every gateway's.
func (b *Balancer) Pins() []PinInfo {
	if b.sh != nil && !b.sh.degraded.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		defer cancel()
		if pins, err := b.sh.store.Pins(ctx, b.now()); err == nil {
			sort.Slice(pins, func(i, j int) bool { return pins[i].User < pins[j].User })
			return pins
		} else {
			b.setDegraded(err)
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	now := b.now()
	var out []PinInfo
	for _, u := range b.users {
		if u.node == nil || !b.pinValidLocked(u, now, 0) {
			continue
		}
		p := PinInfo{User: u.name, Node: u.node.Name, By: u.by, Sessions: u.live}
		if p.By == "" {
			p.By = ByBalancer
		}
		if u.live == 0 {
			p.Until = u.idleSince.Add(b.cfg.AffinityGrace)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}
