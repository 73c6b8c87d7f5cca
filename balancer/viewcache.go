package balancer

import (
	"sync"
	"time"
)

// viewCache holds the shared state's last whole-pool view for at most
// viewTTL. It has a lock of its own, never held together with
// Balancer.mu: its mutex is held across a fetch, so that concurrent
// readers share one round trip, and a fetch may take up to syncTimeout.
type viewCache struct {
	mu  sync.Mutex // protects v, at and gen
	v   *View
	at  time.Time // when v's fetch began
	gen uint64    // bumped when this gateway changes the shared state
}

// forget drops the view after this gateway changed the shared state, so
// its own changes show at once; views fetched before then are not kept.
func (c *viewCache) forget() {
	c.mu.Lock()
	c.v = nil
	c.gen++
	c.mu.Unlock()
}

// generation is the cache's generation, taken before a fetch.
func (c *viewCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put stores a view fetched from at on, unless the cache was invalidated
// since (gen) or holds a newer one.
func (c *viewCache) put(v View, gen uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || (c.v != nil && at.Before(c.at)) {
		return
	}
	c.v, c.at = &v, at
}

// get returns the cached view if it is younger than viewTTL at now, or
// fetches (and keeps) a new one.
func (c *viewCache) get(now time.Time, fetch func() (View, error)) (View, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.v != nil && now.Sub(c.at) < viewTTL {
		return *c.v, nil
	}
	v, err := fetch()
	if err != nil {
		return View{}, err
	}
	c.v, c.at = &v, now
	return v, nil
}
