package balancer

import (
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
)

// This file keeps the node set and each node's placement score: every
// change to a node's health, drain, sessions or load refreshes its score
// (refreshLocked), and a new user's node is the lowest score
// (leastLoadedLocked, rule 3).

// SetNodes replaces the node set. New nodes start down until their first
// health report; nodes that keep their name keep their state, sessions and
// pins; nodes that left lose their pins (their open sessions are left to
// end on their own and still count until released).
func (b *Balancer) SetNodes(nodes []Node) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	seen := make(map[string]bool, len(nodes))
	order := make([]*node, 0, len(nodes))
	for _, nd := range nodes {
		if nd.Name == "" || seen[nd.Name] {
			continue
		}
		seen[nd.Name] = true
		n, ok := b.nodes[nd.Name]
		if !ok {
			n = &node{changed: now, idle: now, users: make(map[string]int), load: NoLoad}
			b.nodes[nd.Name] = n
			b.log.Info("node added", zap.String("node", nd.Name), zap.String("ssh", nd.SSH), zap.String("http", nd.HTTP))
		}
		n.Node = nd
		n.weight = nd.Weight
		if n.weight <= 0 {
			n.weight = 1
		}
		order = append(order, n)
	}
	for name, n := range b.nodes {
		if !seen[name] {
			n.removed = true
			delete(b.nodes, name)
			b.log.Info("node removed", zap.String("node", name))
		}
	}
	b.order = order
	for p := range b.loads {
		b.loads[p] = make([]float64, len(order))
	}
	for i, n := range order {
		n.idx = i
		b.refreshLocked(n)
	}
}

func (b *Balancer) setDrainLocked(n *node, on bool) {
	if n.draining != on {
		n.draining = on
		n.changed = b.now()
		b.refreshLocked(n)
		b.log.Info("node drain changed", zap.String("node", n.Name), zap.Bool("draining", on))
	}
}

// SetConfig puts new settings in force (a reload): the affinity grace
// of pins set from now on, the session cap, the load rules and
// RepinAfter. Pins already set keep their end; placement scores are
// computed anew at once.
func (b *Balancer) SetConfig(cfg Config) {
	cfg = cfg.withDefaults()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg.Store(&cfg)
	for _, n := range b.order {
		b.refreshLocked(n)
	}
}

// SetLoad records the node's measured load (unknown names are ignored)
// and places new users by it from now on. Figures older than StaleAfter
// are kept for ops but not used.
func (b *Balancer) SetLoad(name string, l Load) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return
	}
	if !l.At.IsZero() && (n.load.At.IsZero() || l.At.After(n.load.At)) {
		if n.history == nil {
			n.history = &loadRing{}
		}
		n.history.add(l)
	}
	n.load = l
	b.refreshLocked(n)
}

// SetLoadError records why the node's last load scrape failed (msg
// names the exporter and what went wrong), or clears it when msg is "":
// the load scraper calls it once per node and scrape, so the error ops
// see is the latest (NodeStatus.LoadError). Unknown names are ignored.
// It does not change placement: figures go stale on their own.
func (b *Balancer) SetLoadError(name, msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return
	}
	if msg == "" {
		n.loadErr, n.loadErrAt = "", time.Time{}
		return
	}
	n.loadErr, n.loadErrAt = loadErrorText(msg), b.now()
}

// RefreshLoad scores again every node that has figures, so that figures
// which went stale stop counting even while nothing else changes on the
// node (its exporter stopped answering). Call it once per scrape interval.
func (b *Balancer) RefreshLoad() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range b.order {
		if n.load.Measured() {
			b.refreshLocked(n)
		}
	}
}

// LoadHistory returns the node's recent load samples, oldest first (at
// most 240, one per scrape), or nil for an unknown node.
func (b *Balancer) LoadHistory(name string) []Load {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n, ok := b.nodes[name]
	if !ok || n.history == nil {
		return nil
	}
	return n.history.list()
}

// stale reports whether l is too old to be used at now.
func (b *Balancer) stale(l Load, now time.Time) bool {
	return b.conf().Load.StaleAfter > 0 && now.Sub(l.At) > b.conf().Load.StaleAfter
}

// resourceScoreLocked is the measured part of a node's placement score
// (lower is better; see openScore for the rest): its peak resource use,
// when measured and fresh, plus overMax when the peak is at or above Max;
// 0 without fresh figures, so the node is judged by its sessions alone.
// Staleness is judged when the score is computed: on each new sample
// (every scrape), and on every change of the node's sessions or state.
func (b *Balancer) resourceScoreLocked(n *node) float64 {
	if !n.load.Measured() || b.stale(n.load, b.now()) {
		return 0
	}
	peak := n.load.Peak()
	if math.IsNaN(peak) {
		return 0
	}
	if b.conf().Load.Max > 0 && peak >= b.conf().Load.Max {
		return peak + overMax
	}
	return peak
}

// leastLoadedLocked returns the least-loaded node that is up for protocol
// index p, not draining and not full and not named in avoid, breaking ties
// uniformly at random (rule 3), or nil.
//
// It scans b.loads[p], a dense copy of each node's weighted load (+Inf where
// the node may take no new user) kept current by refreshLocked: the first
// pass finds the least load and counts the nodes that have it, one random
// draw selects among them in a second pass. A draw per tie, or a walk over
// the node structs, costs several times more on a large, quiet pool.
func (b *Balancer) leastLoadedLocked(p int, avoid []string) *node {
	loads := b.loads[p]
	if len(avoid) > 0 {
		// Rare (a front end could not reach a node): scan a copy in which
		// the avoided nodes take no new user, keeping the common scan tight.
		loads = slices.Clone(loads)
		for i, n := range b.order {
			if slices.Contains(avoid, n.Name) {
				loads[i] = math.Inf(1)
			}
		}
	}
	if i := leastOf(loads, b.rand); i >= 0 {
		return b.order[i]
	}
	return nil
}

// openScore is a node's score for a new user: +Inf when it takes none
// (draining, or full at sessions), else its resource score plus
// SessionCost per session per weight.
func (b *Balancer) openScore(weight float64, sessions int, draining bool, resource float64) float64 {
	if draining || (b.conf().MaxSessionsPerNode > 0 && sessions >= b.conf().MaxSessionsPerNode) {
		return math.Inf(1)
	}
	cfg := b.conf()
	score := float64(sessions)/weight*cfg.Load.SessionCost + resource
	if cfg.Placement != Pack {
		return score
	}
	// Pack: the lowest score wins, so a node whose fill is under the
	// target scores minus its fill (the fullest first; an empty node 0),
	// and a node at or over it its spread score (the least loaded of
	// those, and only when no node is under it). The fill is the node's
	// scarcest measured resource, or its sessions' share when that is
	// more (load not measured yet, or users who have not started work):
	// not their sum, which would call a node full while half of it idles.
	target := cfg.Load.PackTarget
	if target <= 0 {
		target = DefaultPackTarget
	}
	fill := max(resource, float64(sessions)/weight*cfg.Load.SessionCost)
	if fill < target {
		return -fill
	}
	return score
}

// refreshLocked recomputes n's entries in b.loads after any change to its
// health, drain state or session counts.
func (b *Balancer) refreshLocked(n *node) {
	if n.removed {
		return
	}
	score := b.openScore(n.weight, n.counted(), n.draining, b.resourceScoreLocked(n))
	for p := range b.loads {
		load := math.Inf(1)
		if n.upFor(p) {
			load = score
		}
		b.loads[p][n.idx] = load
	}
}
