package balancer

import (
	"context"
	"errors"
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
)

// This file is how a balancer sharing its state decides a session: over
// a snapshot the shared state read, with this gateway's own node health
// and load (candidates), by the rules of rules.go.

// acquireShared decides in the shared state. decided is false when the
// shared state could not be asked: the caller decides alone, from this
// gateway's copy of the pin table.
func (b *Balancer) acquireShared(user, client string, q query) (l *Lease, err error, decided bool) {
	sh := b.sh
	if sh.degraded.Load() {
		return nil, nil, false
	}
	p := q.proto.index()
	b.mu.Lock()
	q.now = b.now()
	if l := b.fromPinTableLocked(user, client, q); l != nil {
		b.mu.Unlock()
		return l, nil, true
	}
	cands := b.candidatesLocked(p)
	b.nextID++
	id := b.nextID
	sh.pending[id] = true
	b.mu.Unlock()

	var (
		v      verdict
		pin    Pin
		refuse error
	)
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	ver, err := sh.store.Update(ctx, Read{Now: q.now, Users: []string{user}, Nodes: cands.names, Placing: true}, func(s *Snapshot) (Change, error) {
		old := userPin{Pin: s.Pins[user], live: s.Live[user]}
		v, refuse = decide(sharedFacts{b: b, c: cands, s: s, p: p}, old, q)
		if refuse != nil {
			return Change{}, refuse
		}
		pin = pinAfterGrant(old.Pin, v, q.proto, s.Now.Add(b.keepFor()))
		rec := LeaseRecord{ID: id, User: user, Node: v.node, Proto: q.proto, Client: client, Started: q.now}
		return Change{Pins: map[string]Pin{user: pin}, Put: []LeaseRecord{rec}}, nil
	})
	cancel()
	sh.view.forget()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(sh.pending, id)
	switch {
	case refuse != nil && errors.Is(err, refuse):
		return nil, err, true
	case err != nil:
		b.setDegraded(err)
		return nil, nil, false
	}
	if b.nodes[v.node] == nil { // left this gateway's pool meanwhile
		b.queueRelease(SharedRelease{LeaseID: id, User: user, Node: v.node, Proto: q.proto, Abort: v.created, Lost: v.lost})
		return nil, ErrNoNode, true
	}
	l = b.grantLocked(user, v, q, client, id, pin)
	b.users[user].ver = max(b.users[user].ver, ver)
	return l, nil, true
}

// errPeeked ends an Update that only looked.
var errPeeked = errors.New("peeked")

// peekShared is Peek over the shared state: the same decision as
// acquireShared, applying nothing. decided is false when the shared state
// could not be asked.
func (b *Balancer) peekShared(user string, proto Protocol, avoid []string) (n Node, err error, decided bool) {
	sh := b.sh
	if sh.degraded.Load() {
		return Node{}, nil, false
	}
	p := proto.index()
	b.mu.RLock()
	q := query{proto: proto, avoid: avoid, now: b.now()}
	cands := b.candidatesLocked(p)
	b.mu.RUnlock()
	var v verdict
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	_, err = sh.store.Update(ctx, Read{Now: q.now, Users: []string{user}, Nodes: cands.names, Placing: true}, func(s *Snapshot) (Change, error) {
		var refuse error
		v, refuse = decide(sharedFacts{b: b, c: cands, s: s, p: p}, userPin{Pin: s.Pins[user], live: s.Live[user]}, q)
		if refuse != nil {
			return Change{}, refuse
		}
		return Change{}, errPeeked
	})
	switch {
	case errors.Is(err, errPeeked):
	case errors.Is(err, ErrNoNode):
		return Node{}, err, true
	case err != nil:
		b.setDegraded(err)
		return Node{}, nil, false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if nd := b.nodes[v.node]; nd != nil {
		return nd.Node, nil, true
	}
	return Node{}, ErrNoNode, true
}

// fromPinTableLocked serves a pinned user from this gateway's copy of the
// pin table while pin notices keep it current: the lease is granted at
// once on the user's node and recorded in the shared state in the
// background. It returns nil when the table cannot answer.
func (b *Balancer) fromPinTableLocked(user, client string, q query) *Lease {
	if !b.sh.notices || q.named != "" {
		return nil
	}
	n := b.pinnedLocked(user, q.proto.index())
	if n == nil || slices.Contains(q.avoid, n.Name) {
		return nil
	}
	u := b.users[user]
	v := verdict{node: n.Name, lost: u.pin.Lost, by: u.pin.By}
	b.nextID++
	l := b.grantLocked(user, v, q, client, b.nextID, pinAfterGrant(u.pin, v, q.proto, time.Time{}))
	rec := LeaseRecord{ID: l.id, User: user, Node: n.Name, Proto: q.proto, Client: client, Started: q.now}
	b.queue(func(ctx context.Context) error { return b.record(ctx, rec) })
	return l
}

// decidedAloneLocked notes a decision made without the shared state
// (unreachable): a user new to this gateway is placed by its own view,
// which the log says once per user; the shared state reconciles the
// choice when it answers again.
func (b *Balancer) decidedAloneLocked(user string, v verdict) {
	if v.created && !b.sh.alone[user] {
		b.sh.alone[user] = true
		b.log.Info("user placed by this gateway's own view while the shared state is unreachable; reconciled when it answers",
			zap.String("user", user), zap.String("node", v.node))
	}
}

// candidates are this gateway's nodes for one decision in the shared
// state, copied under Balancer.mu so the decision can run without it.
type candidates struct {
	names []string
	nodes []candidate
	index map[string]int
}

type candidate struct {
	weight   float64
	up       bool // its checks pass for the protocol
	serves   bool // it has an address for the protocol
	checks   [nProtos]check
	resource float64 // the measured part of its score
}

func (b *Balancer) candidatesLocked(p int) candidates {
	c := candidates{names: make([]string, len(b.order)), nodes: make([]candidate, len(b.order)), index: make(map[string]int, len(b.order))}
	for i, n := range b.order {
		c.names[i] = n.Name
		c.index[n.Name] = i
		c.nodes[i] = candidate{weight: n.weight, up: n.upFor(p), serves: n.serves(p), checks: n.checks, resource: b.resourceScoreLocked(n)}
	}
	return c
}

// sharedFacts answers a decision from this gateway's nodes and health
// with the whole pool's sessions and drains, as the shared state read
// them.
type sharedFacts struct {
	b *Balancer
	c candidates
	s *Snapshot
	p int
}

func (f sharedFacts) lookup(name string) (nodeFacts, bool) {
	i, ok := f.c.index[name]
	if !ok {
		return nodeFacts{}, false
	}
	n, sessions, max := &f.c.nodes[i], f.s.Sessions[name], f.b.conf().MaxSessionsPerNode
	return nodeFacts{
		up:       n.up,
		alive:    n.serves && f.b.checksAlive(&n.checks, f.p, f.s.Now, sessions),
		draining: f.s.Draining[name],
		full:     max > 0 && sessions.Total() >= max,
	}, true
}

func (f sharedFacts) leastLoaded(avoid []string, anyAlive bool) string {
	scores := make([]float64, len(f.c.nodes))
	for i := range f.c.nodes {
		n, name := &f.c.nodes[i], f.c.names[i]
		scores[i] = math.Inf(1)
		ok := n.up
		if anyAlive {
			ok = n.serves && f.b.checkedAlive(&n.checks, f.p, f.s.Now, f.s.Sessions[name])
		}
		if ok && !slices.Contains(avoid, name) {
			scores[i] = f.b.openScore(n.weight, f.s.Sessions[name].Total(), f.s.Draining[name], n.resource)
		}
	}
	if i := leastOf(scores, f.b.rand); i >= 0 {
		return f.c.names[i]
	}
	return ""
}
