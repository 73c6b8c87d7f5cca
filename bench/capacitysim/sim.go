package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery/capacity"
)

// loadMax is load.max's default (discovery/load.DefaultMax): the peak at
// or over which a node is saturated.
const loadMax = 0.9

// Azure autoscale's metric rule (see Policies).
const (
	azureWindow   = 5 // minutes averaged
	azureOut      = 0.70
	azureIn       = 0.30
	azureCooldown = 5 * time.Minute
)

// Policy is one way of running the pool.
type Policy struct {
	Name     string
	Balancer balancer.Config
	// Capacity is poolgate's capacity section; nil for Azure's metric
	// rule.
	Capacity *capacity.Config
}

// Policies are the four the issue compares, growing to maxNodes at most.
func Policies(maxNodes int) []Policy {
	grace := 30 * time.Minute
	spread := balancer.Config{AffinityGrace: grace, Placement: balancer.Spread, Load: balancer.LoadConfig{Max: loadMax, SessionCost: 0.1}}
	pack := balancer.Config{AffinityGrace: grace, Placement: balancer.Pack, Load: balancer.LoadConfig{PackTarget: 0.8, Max: loadMax, SessionCost: 0.1}}
	capa := func(spares int) *capacity.Config {
		return &capacity.Config{MaxInstances: maxNodes, MinInstances: 1, ScaleInIdle: 30 * time.Minute, WarmSpares: spares}
	}
	return []Policy{
		{Name: "azure metric rule", Balancer: spread},
		{Name: "spread", Balancer: spread, Capacity: capa(0)},
		{Name: "pack", Balancer: pack, Capacity: capa(0)},
		{Name: "pack + 1 warm spare", Balancer: pack, Capacity: capa(1)},
	}
}

// Result is one policy's day.
type Result struct {
	Policy    string
	NodeHours float64
	Logins    int             // logins wanted (a cut session's user logs in again)
	Placed    int             // logins that got a node
	Waits     []time.Duration // of the logins that waited for a boot, sorted
	Saturated int             // logins placed on a node at or over load.max
	PeakNodes int             // running and booting
	Cut       int             // sessions ended by a scale-in
	Unplaced  int             // logins still waiting when the day ended
	// SaturatedPinned counts the saturated placements that went to the
	// user's node by their pin (back from a break within the grace, or a
	// second session), which no placement can move.
	SaturatedPinned int
}

// P50 and Max are the median and longest wait (0 when none waited).
func (r Result) P50() time.Duration {
	if len(r.Waits) == 0 {
		return 0
	}
	return r.Waits[(len(r.Waits)-1)/2]
}

func (r Result) Max() time.Duration {
	if len(r.Waits) == 0 {
		return 0
	}
	return r.Waits[len(r.Waits)-1]
}

// userRun is a member living the day under one policy.
type userRun struct {
	m      *member
	visit  int           // current or next visit
	next   time.Duration // next login wanted (-1: none)
	want   time.Duration // when the waiting login was wanted
	login  time.Duration // current session's login
	logout time.Duration
	lease  *balancer.Lease
	// resume: the next login reconnects a cut session, ending at logout.
	resume bool
}

type sim struct {
	day    *Day
	p      Policy
	boot   time.Duration
	max    int
	now    time.Duration
	b      *balancer.Balancer
	nodes  []string        // up, oldest first
	starts []time.Duration // when each booting instance is up
	nextID int
	users  []*userRun
	queue  []*userRun // logins waiting, first come first
	cpu    map[string]float64
	mem    map[string]float64
	// cpuAvg is Azure's CPU metric, one sample a minute: the mean over
	// running nodes of their CPU use, at most 100 %.
	cpuAvg       []float64
	lastAction   time.Duration // Azure: last scale action (-1: none)
	lastScaleOut time.Duration // poolgate: last scale-out (-1: none)
	res          Result
}

// Run lives the day under p: boot is a new node's time from the start
// order to taking users.
func Run(d *Day, p Policy, boot time.Duration, maxNodes int) Result {
	return runTrace(d, p, boot, maxNodes, nil)
}

// runTrace is Run calling trace, if set, at the end of every minute.
func runTrace(d *Day, p Policy, boot time.Duration, maxNodes int, trace func(*sim)) Result {
	s := &sim{day: d, p: p, boot: boot, max: maxNodes, now: dayStart, lastAction: -1, lastScaleOut: -1, cpu: map[string]float64{}, mem: map[string]float64{}}
	s.res.Policy = p.Name
	r := rand.New(rand.NewPCG(d.Seed, 0xba1))
	s.b = balancer.New(p.Balancer, balancer.Options{
		Now:  func() time.Time { return s.clock(s.now) },
		Rand: func(n int) int { return r.IntN(n) },
	})
	for _, m := range d.Members {
		s.users = append(s.users, &userRun{m: m, next: m.first})
	}
	// The pool starts the day at its minimum: one node, up since the night.
	s.up()
	var nodeMinutes int
	for s.now = dayStart; s.now < dayEnd; s.now += time.Minute {
		for len(s.starts) > 0 && s.starts[0] <= s.now {
			s.starts = s.starts[1:]
			s.up()
		}
		s.logouts()
		s.scrape()
		s.logins()
		if p.Capacity != nil {
			s.decide()
		} else {
			s.azure()
		}
		running := len(s.nodes) + len(s.starts)
		nodeMinutes += running // a booting VM is billed too
		s.res.PeakNodes = max(s.res.PeakNodes, running)
		if trace != nil {
			trace(s)
		}
	}
	s.res.NodeHours = float64(nodeMinutes) / 60
	s.res.Unplaced = len(s.queue)
	slices.Sort(s.res.Waits)
	return s.res
}

// up adds a node that has booted to the pool, its check passing.
func (s *sim) up() {
	s.nextID++
	name := fmt.Sprintf("node-%02d", s.nextID)
	s.nodes = append(s.nodes, name)
	s.setNodes()
	s.b.SetHealth(name, balancer.SSH, true, "ok")
}

func (s *sim) setNodes() {
	set := make([]balancer.Node, len(s.nodes))
	for i, n := range s.nodes {
		set[i] = balancer.Node{Name: n, SSH: n + ":22"}
	}
	s.b.SetNodes(set)
}

// logouts ends the sessions due; the member's next visit follows its break.
func (s *sim) logouts() {
	for _, u := range s.users {
		if u.lease == nil || u.logout > s.now {
			continue
		}
		u.lease.Release()
		u.lease = nil
		u.visit++
		u.next = -1
		if u.visit < len(u.m.visits) {
			u.next = s.now + u.m.visits[u.visit].gap
			if u.next > lastStart {
				u.next = -1
			}
		}
	}
}

// scrape measures every node (its users' use and its own) and reports it
// to the balancer, as the load scraper does once a minute.
func (s *sim) scrape() {
	clear(s.cpu)
	clear(s.mem)
	for _, n := range s.nodes {
		s.cpu[n], s.mem[n] = baseCPU, baseMem
	}
	for _, u := range s.users {
		if u.lease != nil {
			c, m := s.use(u)
			s.cpu[u.lease.Node().Name] += c
			s.mem[u.lease.Node().Name] += m
		}
	}
	at := s.clock(s.now)
	sum := 0.0
	for _, n := range s.nodes {
		s.b.SetLoad(n, balancer.Load{CPU: s.cpu[n], Memory: s.mem[n], GPU: balancer.Unknown, GPUMemory: balancer.Unknown, At: at})
		sum += math.Min(s.cpu[n], 1)
	}
	if len(s.nodes) > 0 {
		s.cpuAvg = append(s.cpuAvg, sum/float64(len(s.nodes)))
	}
}

func (s *sim) use(u *userRun) (cpu, mem float64) {
	return s.day.use(u.m, u.m.visits[u.visit], s.now-u.login, int(s.now/time.Minute))
}

// logins queues the logins due and places every queued one that can be.
func (s *sim) logins() {
	for _, u := range s.users {
		if u.lease == nil && u.next >= 0 && u.next <= s.now {
			u.want, u.next = u.next, -1
			s.queue = append(s.queue, u)
			s.res.Logins++
		}
	}
	waiting := s.queue[:0]
	for _, u := range s.queue {
		if !s.place(u) {
			waiting = append(waiting, u)
		}
	}
	s.queue = waiting
}

// saturated reports whether the node's last figures are at or over
// load.max, as the balancer and capacity.Decide see them.
func saturated(st balancer.NodeStatus) bool {
	return st.Load.Measured() && st.Load.Peak() >= loadMax
}

// place logs the user in, or reports that they must wait for a boot: no
// node can take them, or every node is saturated while one is booting.
func (s *sim) place(u *userRun) bool {
	_, pinned := s.b.Pinned(u.m.name, balancer.SSH)
	if !pinned {
		all := len(s.nodes) > 0
		for _, st := range s.b.Nodes() {
			all = all && saturated(st)
		}
		if len(s.nodes) == 0 || all && len(s.starts) > 0 {
			return false
		}
	}
	l, err := s.b.Acquire(u.m.name, balancer.SSH, "sim")
	if err != nil {
		return false
	}
	node := l.Node().Name
	if math.Max(s.cpu[node], s.mem[node]) >= loadMax {
		s.res.Saturated++
		if pinned {
			s.res.SaturatedPinned++
		}
	}
	if wait := s.now - u.want; wait > 0 {
		s.res.Waits = append(s.res.Waits, wait)
	}
	u.lease = l
	s.res.Placed++
	if u.resume {
		u.resume = false // the session goes on to its planned end
	} else {
		u.login = s.now
		u.logout = min(s.now+u.m.visits[u.visit].length, lastLogout)
	}
	c, m := s.use(u)
	s.cpu[node] += c
	s.mem[node] += m
	return true
}

// decide applies capacity.Decide over the pool as the balancer sees it.
func (s *sim) decide() {
	st := capacity.State{Now: s.clock(s.now), Starting: len(s.starts)}
	if s.lastScaleOut >= 0 {
		st.LastScaleOut = s.clock(s.lastScaleOut)
	}
	for _, ns := range s.b.Nodes() {
		st.Nodes = append(st.Nodes, capacity.Node{
			Name: ns.Name, Sessions: ns.Sessions.Total(), Pinned: ns.Pinned,
			IdleSince: ns.IdleSince, Saturated: saturated(ns),
		})
	}
	for _, a := range capacity.Decide(*s.p.Capacity, st) {
		for range a.Add {
			s.starts = append(s.starts, s.now+s.boot)
		}
		if a.Add > 0 {
			s.lastScaleOut = s.now
		}
		if a.Remove != "" {
			s.remove(a.Remove)
		}
	}
}

// clock is the virtual time d after the day's midnight.
func (s *sim) clock(d time.Duration) time.Time {
	return time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC).Add(d)
}

// azure is the metric rule a plain Azure setup proposes: the 5-minute
// average CPU over the running instances; over 70 % one more, under 30 %
// one fewer (an idle one if any, else the newest, sessions and all), then
// 5 minutes of cooldown; 1 to max instances.
func (s *sim) azure() {
	if s.lastAction >= 0 && s.now-s.lastAction < azureCooldown {
		return
	}
	window := s.cpuAvg[max(0, len(s.cpuAvg)-azureWindow):]
	if len(window) == 0 {
		return
	}
	avg := 0.0
	for _, v := range window {
		avg += v
	}
	avg /= float64(len(window))
	switch {
	case avg > azureOut && len(s.nodes)+len(s.starts) < s.max:
		s.starts = append(s.starts, s.now+s.boot)
		s.lastAction = s.now
	case avg < azureIn && len(s.nodes) > 1:
		victim := s.nodes[len(s.nodes)-1]
		sessions := map[string]int{}
		for _, u := range s.users {
			if u.lease != nil {
				sessions[u.lease.Node().Name]++
			}
		}
		for i := len(s.nodes) - 1; i >= 0; i-- {
			if sessions[s.nodes[i]] == 0 {
				victim = s.nodes[i]
				break
			}
		}
		s.remove(victim)
		s.lastAction = s.now
	}
}

// remove deletes the node; its sessions are cut, and their users log in
// again a minute later to go on with their work elsewhere.
func (s *sim) remove(name string) {
	for _, u := range s.users {
		if u.lease != nil && u.lease.Node().Name == name {
			u.lease.Fail()
			u.lease = nil
			u.resume = true
			u.next = s.now + time.Minute
			s.res.Cut++
		}
	}
	s.nodes = slices.DeleteFunc(s.nodes, func(n string) bool { return n == name })
	s.setNodes()
}
