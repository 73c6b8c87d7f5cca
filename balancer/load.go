package balancer

import (
	"math"
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

// LoadConfig holds the placement settings for measured load (YAML section
// "load", with the scraper's settings beside them).
type LoadConfig struct {
	// Max: a node at or above it on CPU, memory or GPU takes no new user
	// while a node below it (or without figures) can. 0 turns the
	// exclusion off. Default 0.9.
	Max float64
	// SessionCost is what one session per weight adds to a node's score,
	// in the units of load (a fraction of the node). Default 0.1: ten
	// sessions weigh like one fully used CPU per CPU.
	SessionCost float64
	// StaleAfter: figures older than this are not used (the node is judged
	// by its sessions alone) and ops see them as stale. Zero means never.
	StaleAfter time.Duration
}

// Defaults of LoadConfig.
const (
	DefaultLoadMax     = 0.9
	DefaultSessionCost = 0.1
)

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

// scoreLocked is a node's placement score for a new user (lower is
// better): its peak resource use, when measured and fresh, plus
// SessionCost per live session per weight, plus overMax when the peak is
// at or above Max. Without figures the node is judged by its sessions
// alone. Staleness is judged when the score is computed: on each new
// sample (every scrape), and on every change of the node's sessions or
// state.
func (b *Balancer) scoreLocked(n *node, sessions int) float64 {
	return float64(sessions)/n.weight*b.cfg.Load.SessionCost + b.resourceScoreLocked(n)
}

// resourceScoreLocked is the measured part of a node's score: its peak
// resource use, plus overMax at or above Max; 0 without fresh figures.
// With shared state it goes to the shared state's pick as
// Candidate.Load, where the sessions are the whole pool's.
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
