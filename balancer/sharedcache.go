package balancer

import (
	"sync"
	"time"
)

// pinCache holds pins learnt from the shared state, so that a returning
// user's pick needs no round trip. It serves only while the shared state's
// pin notices are known to arrive (live), and is emptied whenever that
// changes, since notices may have been missed. It is protected by
// Balancer.mu.
type pinCache struct {
	entries map[string]pinEntry
	live    bool   // pin notices are known to arrive
	epoch   uint64 // counts forgets, so a claim answered across one caches nothing
}

// pinEntry is a pin learnt from the shared state.
type pinEntry struct {
	node string
	at   time.Time
}

func newPinCache() pinCache { return pinCache{entries: map[string]pinEntry{}} }

// get returns the user's cached node, dropping an entry past pinCacheTTL.
func (c *pinCache) get(user string, now time.Time) (string, bool) {
	e, ok := c.entries[user]
	if !ok || !c.live {
		return "", false
	}
	if now.Sub(e.at) > pinCacheTTL {
		delete(c.entries, user)
		return "", false
	}
	return e.node, true
}

// put caches the user's node, learnt from an answer asked for at epoch:
// if a notice arrived since (it may be about this user), nothing is kept.
func (c *pinCache) put(user, node string, now time.Time, epoch uint64) {
	if c.live && c.epoch == epoch {
		c.entries[user] = pinEntry{node: node, at: now}
	}
}

// forget drops the user's entry: another gateway created or moved the pin.
func (c *pinCache) forget(user string) {
	delete(c.entries, user)
	c.epoch++
}

// setLive records whether notices arrive; either way every entry goes.
func (c *pinCache) setLive(live bool) {
	clear(c.entries)
	c.live = live
	c.epoch++
}

// prune drops the entries past pinCacheTTL, so the cache holds only
// recently active users.
func (c *pinCache) prune(now time.Time) {
	for user, e := range c.entries {
		if now.Sub(e.at) > pinCacheTTL {
			delete(c.entries, user)
		}
	}
}

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

// keep stores a view fetched from at on, unless the cache was invalidated
// since (gen) or holds a newer one.
func (c *viewCache) keep(v View, gen uint64, at time.Time) {
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
