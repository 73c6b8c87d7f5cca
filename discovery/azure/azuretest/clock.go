package azuretest

import (
	"sync"
	"time"
)

// Clock is a hand-set time source for a Source's Options.Now and a
// balancer's, so that grace periods and spacing are exact in tests.
type Clock struct {
	mu sync.Mutex // protects t
	t  time.Time
}

// NewClock returns a clock set to t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
