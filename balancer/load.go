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
	// PackTarget is, with placement "pack", the fill up to which a node
	// is filled before an emptier one is started: the higher of its
	// scarcest measured resource (the peak of CPU, memory and GPU use)
	// and SessionCost per session per weight. Zero means
	// DefaultPackTarget.
	PackTarget float64
}

// DefaultPackTarget is the PackTarget used when it is zero: a node is
// filled to 80 % of its scarcest resource, below load.max's default 0.9
// so that the users on it have room to work (bench/capacitysim measured
// 0.7 to 0.85: docs/PERFORMANCE.md).
const DefaultPackTarget = 0.8

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
