package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// The team's day, drawn once from the seed and lived by every policy.
// docs/PERFORMANCE.md ("Capacity: a team's day") gives every number below
// with its source or reasoning.

// Day bounds, as offsets from midnight of the virtual day.
const (
	dayStart   = 8 * time.Hour
	dayEnd     = 19 * time.Hour
	lastLogout = dayEnd - time.Minute // every session ends within the day
	lastStart  = 17*time.Hour + 30*time.Minute
)

// A kind of user: what one of them uses of one DSVM while working, as
// fractions (CPU: run queue per CPU, as the balancer reads it).
type kind struct {
	name     string
	share    float64 // of the team
	cpu, mem float64 // while working (CPU before noise)
	// jobCPU and jobMem replace cpu and mem while a training job runs
	// (training users only).
	jobCPU, jobMem float64
}

// kinds follows balancer/blend_test.go (TestBlendSpreadsARealisticMix):
// most users edit notebooks, one in five runs training jobs that take a
// large share of a node; a third kind, dataframe work, sits between.
var kinds = []kind{
	{name: "light notebook", share: 0.5, cpu: 0.05, mem: 0.08},
	{name: "heavy pandas", share: 0.3, cpu: 0.25, mem: 0.30},
	{name: "training run", share: 0.2, cpu: 0.05, mem: 0.10, jobCPU: 0.60, jobMem: 0.25},
}

// Node overhead with no user: the OS, JupyterHub, sshd and exporters.
const baseCPU, baseMem = 0.02, 0.05

// visit is one session of a member: planned, with the break before it.
type visit struct {
	gap    time.Duration // break before it (0 for the first visit)
	length time.Duration
	// jobAt and jobLen: a training job from jobAt after login, for
	// jobLen (0: none).
	jobAt, jobLen time.Duration
}

// member is one user's plan for the day.
type member struct {
	id     int
	name   string
	kind   int
	first  time.Duration // first arrival, from midnight
	visits []visit
}

// Day is the team's plan, the same for every policy.
type Day struct {
	Seed    uint64
	Members []*member
}

// NewDay draws the team's day from seed.
func NewDay(seed uint64, users int) *Day {
	r := rand.New(rand.NewPCG(seed, 0x7ea))
	d := &Day{Seed: seed}
	for i := range users {
		m := &member{id: i, name: fmt.Sprintf("user%03d", i)}
		x := r.Float64()
		for k, kd := range kinds {
			if x < kd.share || k == len(kinds)-1 {
				m.kind = k
				break
			}
			x -= kd.share
		}
		// Four in five come in the morning, around 9:00; the rest in the
		// wave after lunch.
		if r.Float64() < 0.8 {
			a := 9*time.Hour + time.Duration(r.NormFloat64()*float64(25*time.Minute))
			m.first = clamp(a, 8*time.Hour+15*time.Minute, 10*time.Hour+30*time.Minute)
		} else {
			m.first = 13*time.Hour + uniform(r, 0, time.Hour)
		}
		m.first = m.first.Truncate(time.Minute)
		at, gap := m.first, time.Duration(0)
		for n := 0; ; n++ {
			v := visit{gap: gap, length: uniform(r, time.Hour, 4*time.Hour).Truncate(time.Minute)}
			if at+v.length > lastLogout {
				v.length = lastLogout - at
			}
			if kinds[m.kind].jobCPU > 0 && r.Float64() < 0.8 {
				v.jobAt = uniform(r, 5*time.Minute, 30*time.Minute).Truncate(time.Minute)
				v.jobLen = uniform(r, 30*time.Minute, 2*time.Hour).Truncate(time.Minute)
			}
			m.visits = append(m.visits, v)
			end := at + v.length
			again := 0.75
			if n > 0 {
				again = 0.5
			}
			if r.Float64() >= again {
				break
			}
			if end >= 11*time.Hour+30*time.Minute && end <= 13*time.Hour+30*time.Minute {
				gap = uniform(r, 20*time.Minute, time.Hour) // lunch
			} else {
				gap = uniform(r, 5*time.Minute, 30*time.Minute) // coffee, a meeting
			}
			gap = gap.Truncate(time.Minute)
			at = end + gap
			if at > lastStart {
				break
			}
		}
		d.Members = append(d.Members, m)
	}
	return d
}

func uniform(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}

func clamp(v, lo, hi time.Duration) time.Duration { return max(lo, min(hi, v)) }

// use is what the member adds to their node's load at minute (from
// midnight) of a session that began since ago. The noise is a hash of the
// seed, the member and the minute, so every policy sees the same figures.
func (d *Day) use(m *member, v visit, since time.Duration, minute int) (cpu, mem float64) {
	k := kinds[m.kind]
	if v.jobLen > 0 && since >= v.jobAt && since < v.jobAt+v.jobLen {
		return k.jobCPU * (0.9 + 0.2*noise(d.Seed, m.id, minute, 1)), k.jobMem * (0.9 + 0.2*noise(d.Seed, m.id, minute, 2))
	}
	return k.cpu * (0.5 + noise(d.Seed, m.id, minute, 1)), k.mem * (0.9 + 0.2*noise(d.Seed, m.id, minute, 2))
}

// noise is a uniform draw in [0, 1) that depends only on its arguments
// (splitmix64).
func noise(seed uint64, user, minute, salt int) float64 {
	z := seed*0x9E3779B97F4A7C15 ^ uint64(user)<<32 ^ uint64(minute)<<8 ^ uint64(salt)
	z += 0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}
