package balancer

import (
	"math"
	"slices"
	"time"
)

// Load is a node's measured resource use, from its exporters. A field that
// was not measured is NaN (Unknown); CPU is the run queue per CPU (load1 ÷
// CPUs), so it can exceed 1; the others are fractions of the node's
// memory, GPU time and GPU memory in use.
type Load struct {
	CPU, Memory, GPU, GPUMemory float64
	// At is when the figures were taken; zero when there are none.
	At time.Time
}

// Unknown is the value of a Load field that was not measured.
var Unknown = math.NaN()

// NoLoad is a Load with nothing measured.
var NoLoad = Load{CPU: Unknown, Memory: Unknown, GPU: Unknown, GPUMemory: Unknown}

// Measured reports whether any figure is known.
func (l Load) Measured() bool {
	return !l.At.IsZero() && !(math.IsNaN(l.CPU) && math.IsNaN(l.Memory) && math.IsNaN(l.GPU) && math.IsNaN(l.GPUMemory))
}

// Peak is the highest known figure, NaN when none is known: the resource
// that will run out first.
func (l Load) Peak() float64 {
	peak := Unknown
	for _, v := range [...]float64{l.CPU, l.Memory, l.GPU, l.GPUMemory} {
		if !math.IsNaN(v) && (math.IsNaN(peak) || v > peak) {
			peak = v
		}
	}
	return peak
}

// LoadConfig holds the placement settings for measured load. It is no
// YAML section of its own: cmd fills it from the section "load"
// (discovery/load.Config), which holds the keys' defaults and checks.
type LoadConfig struct {
	// Max: a node at or above it on CPU, memory or GPU takes no new user
	// while a node below it (or without figures) can. 0 turns the
	// exclusion off.
	Max float64
	// SessionCost is what one session per weight adds to a node's score,
	// in the units of load (a fraction of the node). Zero means
	// DefaultSessionCost, 0.1: ten sessions weigh like one fully used CPU
	// per CPU.
	SessionCost float64
	// StaleAfter: figures older than this are not used (the node is judged
	// by its sessions alone) and ops see them as stale. Zero means never.
	StaleAfter time.Duration
}

// DefaultSessionCost is the SessionCost that New uses when it is zero.
const DefaultSessionCost = 0.1

// overMax is added to the score of a node at or above LoadConfig.Max, so
// that such nodes are chosen only when no other can take the user, and
// then by their score as usual.
const overMax = 1e9

// history keeps a node's last loadHistory samples for ops (the dashboard's
// sparkline since the gateway started).
const loadHistory = 240

// loadRing is a node's recent samples, oldest first once full.
type loadRing struct {
	buf  [loadHistory]Load
	next int
	full bool
}

func (r *loadRing) add(l Load) {
	r.buf[r.next] = l
	r.next = (r.next + 1) % loadHistory
	if r.next == 0 {
		r.full = true
	}
}

func (r *loadRing) list() []Load {
	if !r.full {
		return append([]Load(nil), r.buf[:r.next]...)
	}
	out := make([]Load, 0, loadHistory)
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
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
	return b.cfg.Load.StaleAfter > 0 && now.Sub(l.At) > b.cfg.Load.StaleAfter
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
	if b.cfg.Load.Max > 0 && peak >= b.cfg.Load.Max {
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

// leastOf returns the index of the lowest finite score, a uniform draw of
// rnd among ties, or -1 when every score is +Inf.
func leastOf(scores []float64, rnd func(int) int) int {
	best, ties := math.Inf(1), 0
	for _, s := range scores {
		switch {
		case s < best:
			best, ties = s, 1
		case s == best:
			ties++
		}
	}
	if math.IsInf(best, 1) {
		return -1
	}
	k := 0
	if ties > 1 {
		k = rnd(ties)
	}
	for i, s := range scores {
		if s == best {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return -1 // unreachable: the scores did not change
}

// openScore is a node's score for a new user: +Inf when it takes none
// (draining, or full at sessions), else its resource score plus
// SessionCost per session per weight.
func (b *Balancer) openScore(weight float64, sessions int, draining bool, resource float64) float64 {
	if draining || (b.cfg.MaxSessionsPerNode > 0 && sessions >= b.cfg.MaxSessionsPerNode) {
		return math.Inf(1)
	}
	return float64(sessions)/weight*b.cfg.Load.SessionCost + resource
}

// refreshLocked recomputes n's entries in b.loads after any change to its
// health, drain state or session counts.
func (b *Balancer) refreshLocked(n *node) {
	if n.removed {
		return
	}
	score := b.openScore(n.weight, n.sessions.Total(), n.draining, b.resourceScoreLocked(n))
	for p := range b.loads {
		load := math.Inf(1)
		if n.upFor(p) {
			load = score
		}
		b.loads[p][n.idx] = load
	}
}
