package netx

import (
	"errors"
	"sync"
	"sync/atomic"
)

// What Slots.Take says when a cap is reached.
var (
	// ErrSlotsFull: the cap on unproven connections in all is reached.
	ErrSlotsFull = errors.New("too many unproven connections")
	// ErrAddressSlotsFull: the client's address holds its share.
	ErrAddressSlotsFull = errors.New("too many unproven connections from one address")
)

// Slots counts the connections that have not yet proven who they are
// (not past authentication), in all and per address key ([AddrKey]), and
// caps both, so that a flood, or one address, cannot hold every
// connection a front end will take. Its zero value counts without a cap.
// Set the caps before the first Take.
type Slots struct {
	// Max caps unproven connections in all; 0 or less means no cap.
	Max int
	// PerAddress caps them per address key; 0 or less means no cap.
	PerAddress int

	mu     sync.Mutex // protects total and byAddr
	total  int
	byAddr map[string]int
}

// Take reserves a slot for a connection from key, or returns
// ErrSlotsFull or ErrAddressSlotsFull. The caps are exact: the count is
// checked and raised in one step.
func (s *Slots) Take(key string) (*Slot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.Max > 0 && s.total >= s.Max:
		return nil, ErrSlotsFull
	case s.PerAddress > 0 && s.byAddr[key] >= s.PerAddress:
		return nil, ErrAddressSlotsFull
	}
	if s.byAddr == nil {
		s.byAddr = map[string]int{}
	}
	s.total++
	s.byAddr[key]++
	return &Slot{slots: s, key: key}, nil
}

// InUse counts the slots taken and not yet released.
func (s *Slots) InUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (s *Slots) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.byAddr[key]--; s.byAddr[key] <= 0 {
		delete(s.byAddr, key)
	}
}

// Slot is one connection's place among the unproven. A nil *Slot (a
// server without Slots) is valid: it holds nothing.
type Slot struct {
	slots    *Slots
	key      string
	released atomic.Bool
}

// Key is the address key the slot counts against ("" for a nil Slot).
func (sl *Slot) Key() string {
	if sl == nil {
		return ""
	}
	return sl.key
}

// Release gives the slot back: the connection is proven, or it ended.
// Only the first call counts, so the proof and the end of a connection
// may both release it.
func (sl *Slot) Release() {
	if sl == nil || !sl.released.CompareAndSwap(false, true) {
		return
	}
	sl.slots.release(sl.key)
}
