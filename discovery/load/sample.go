package load

import (
	"math"
	"time"
)

// Sample is one node's measured load. A nil field was not measured: its
// exporter is not configured, failed, or did not carry the metric. It is
// never zero for "unknown". The values pointed to are never changed once
// a Sample is reported, so copies may share them.
type Sample struct {
	// CPU is the run queue per CPU: node_load1 ÷ the number of CPUs. It
	// exceeds 1 when work waits for a CPU.
	CPU *float64
	// Memory is the fraction of memory in use: 1 − MemAvailable/MemTotal.
	Memory *float64
	// GPU is the utilisation (0–1) of the node's least-used GPU.
	GPU *float64
	// GPUMemory is the fraction of frame-buffer memory in use (0–1) on
	// that same GPU.
	GPUMemory *float64
	// At is when the oldest figure in the sample was measured; zero for a
	// sample never measured.
	At time.Time
}

// Measured reports whether any field of s holds a figure.
func (s Sample) Measured() bool {
	return s.CPU != nil || s.Memory != nil || s.GPU != nil || s.GPUMemory != nil
}

// Stale reports whether s is too old to be trusted at now: never
// measured, or measured maxAge or longer ago (see [Config.StaleAfter]).
// A stale sample counts as missing.
func (s Sample) Stale(now time.Time, maxAge time.Duration) bool {
	return s.At.IsZero() || now.Sub(s.At) >= maxAge
}

// merge returns s with the fields that o measured taken from o.
func (s Sample) merge(o Sample) Sample {
	if o.CPU != nil {
		s.CPU = o.CPU
	}
	if o.Memory != nil {
		s.Memory = o.Memory
	}
	if o.GPU != nil {
		s.GPU = o.GPU
	}
	if o.GPUMemory != nil {
		s.GPUMemory = o.GPUMemory
	}
	return s
}

// finite returns a pointer to v, or nil when v is NaN or infinite.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// fraction returns v clamped to [0, 1], or nil when v is not finite.
func fraction(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	v = min(max(v, 0), 1)
	return &v
}
