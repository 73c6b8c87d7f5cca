package balancer

import (
	"math"
	"math/rand/v2"
	"testing"
)

// blendRun places a day of a realistic mix on a pool of four 8-CPU nodes
// with the given scoring, and returns the mean (over arrivals) of the
// busiest node's CPU per CPU and how many users landed on a node at or
// over load.max while another node was under it. One user in five starts
// a training job (a quarter of the node's CPUs) that goes on after they leave, as
// such jobs do; the rest edit notebooks (a fiftieth each). Users leave at
// random (1 in 40 per arrival), jobs end at random (1 in 40). Figures
// reach the balancer one scrape late: after every second arrival.
func blendRun(seed uint64, score func(peak float64, sessions int) float64) (meanPeak float64, overloaded int) {
	const nodes, arrivals, maxLoad = 4, 400, 0.9
	r := rand.New(rand.NewPCG(seed, 1))
	type user struct {
		node   int
		active bool // has a session
		job    bool // a training job runs
	}
	var users []*user
	load := func() []float64 {
		l := make([]float64, nodes)
		for _, u := range users {
			if u.active {
				l[u.node] += 0.02
			}
			if u.job {
				l[u.node] += 0.25
			}
		}
		return l
	}
	reported := make([]float64, nodes)
	var sumPeak float64
	for a := range arrivals {
		for _, u := range users {
			if u.active && r.IntN(40) == 0 {
				u.active = false
			}
			if u.job && r.IntN(40) == 0 {
				u.job = false
			}
		}
		cpu := load()
		if a%2 == 0 {
			copy(reported, cpu)
		}
		sessions := make([]int, nodes)
		for _, u := range users {
			if u.active {
				sessions[u.node]++
			}
		}
		under, trulyUnder := false, false
		for i := range nodes {
			under = under || reported[i] < maxLoad
			trulyUnder = trulyUnder || cpu[i] < maxLoad
		}
		best, bestScore := 0, math.Inf(1)
		for i := range nodes {
			s := score(reported[i], sessions[i])
			if reported[i] >= maxLoad && under {
				s += overMax
			}
			if s < bestScore {
				best, bestScore = i, s
			}
		}
		if cpu[best] >= maxLoad && trulyUnder {
			overloaded++
		}
		users = append(users, &user{node: best, active: true, job: r.IntN(5) == 0})
		peak := 0.0
		for _, c := range load() {
			peak = max(peak, c)
		}
		sumPeak += peak
	}
	return sumPeak / arrivals, overloaded
}

// TestBlendSpreadsARealisticMix is the measurement behind the placement
// score: over 200 seeded runs, the sum of peak load and the session cost
// (what the balancer uses) is compared with the higher of the two and with
// sessions alone. The sum must do at least as well as either on the mean
// peak load; the figures are logged (go test -v -run Blend ./balancer).
func TestBlendSpreadsARealisticMix(t *testing.T) {
	blends := []struct {
		name  string
		score func(peak float64, sessions int) float64
	}{
		{"sum: peak + 0.1/session", func(p float64, s int) float64 { return p + DefaultSessionCost*float64(s) }},
		{"max(peak, 0.1/session)", func(p float64, s int) float64 { return math.Max(p, DefaultSessionCost*float64(s)) }},
		{"sessions alone", func(_ float64, s int) float64 { return float64(s) }},
	}
	means := make([]float64, len(blends))
	for i, bl := range blends {
		var sumPeak float64
		over := 0
		for seed := range uint64(200) {
			p, o := blendRun(seed, bl.score)
			sumPeak += p
			over += o
		}
		means[i] = sumPeak / 200
		t.Logf("%-24s busiest node's CPU per CPU %.3f on average, users sent to an overloaded node %d", bl.name, means[i], over)
	}
	if means[0] > means[1] || means[0] > means[2] {
		t.Fatalf("the sum blend spreads worse than another (%v): reconsider the score", means)
	}
}
