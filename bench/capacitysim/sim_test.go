package main

import (
	"reflect"
	"testing"
	"time"
)

const testBoot, testMax = 4 * time.Minute, 20

func byName(t *testing.T, results []Result, name string) Result {
	t.Helper()
	for _, r := range results {
		if r.Policy == name {
			return r
		}
	}
	t.Fatalf("no policy %q", name)
	return Result{}
}

// TestSameSeedSameDay: the day is a function of the seed, whatever the
// policy (the balancer's ties are drawn from the seed too).
func TestSameSeedSameDay(t *testing.T) {
	a := RunDay(NewDay(3, 12), testBoot, testMax)
	b := RunDay(NewDay(3, 12), testBoot, testMax)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 3 gave two days:\n%+v\n%+v", a, b)
	}
	if c := RunDay(NewDay(4, 12), testBoot, testMax); reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 3 and 4 gave the same figures: the seed is not used")
	}
}

// TestEveryLoginPlaced: under every policy, on small teams over several
// days, every login gets a node before the day ends, the pool is never
// empty of nodes paid for, and poolgate's policies never cut a session
// (Decide removes only nodes with no session and no pin).
func TestEveryLoginPlaced(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		d := NewDay(seed, 10)
		visits := 0
		for _, m := range d.Members {
			visits += len(m.visits)
		}
		for _, r := range RunDay(d, testBoot, testMax) {
			if r.Unplaced != 0 || r.Placed != r.Logins {
				t.Errorf("seed %d, %s: %d of %d logins placed, %d waiting at 19:00", seed, r.Policy, r.Placed, r.Logins, r.Unplaced)
			}
			if r.Logins-r.Cut > visits || r.Logins == 0 {
				t.Errorf("seed %d, %s: %d logins (%d cut) for %d planned sessions", seed, r.Policy, r.Logins, r.Cut, visits)
			}
			if r.NodeHours <= 0 || r.PeakNodes < 1 || r.PeakNodes > testMax {
				t.Errorf("seed %d, %s: %.1f node-hours, peak %d nodes", seed, r.Policy, r.NodeHours, r.PeakNodes)
			}
			if r.NodeHours < 11 {
				t.Errorf("seed %d, %s: %.1f node-hours: less than one node all day (min 1)", seed, r.Policy, r.NodeHours)
			}
			if r.Policy != "azure metric rule" && r.Cut != 0 {
				t.Errorf("seed %d, %s: %d sessions cut", seed, r.Policy, r.Cut)
			}
		}
	}
}

// TestDefaultDay holds the figures docs/PERFORMANCE.md reads from the
// default day (seed 1, 60 users, 4 minutes' boot, 20 nodes at most):
// if the model or the policies change them, the doc's reading must be
// checked again.
func TestDefaultDay(t *testing.T) {
	results := RunDay(NewDay(1, 60), testBoot, testMax)
	rule, spread, pack, spare := byName(t, results, "azure metric rule"), byName(t, results, "spread"), byName(t, results, "pack"), byName(t, results, "pack + 1 warm spare")
	if len(spare.Waits) != 0 {
		t.Errorf("pack + 1 warm spare: %d logins waited for a boot, want none", len(spare.Waits))
	}
	if len(rule.Waits) == 0 || len(spread.Waits) == 0 || len(pack.Waits) == 0 {
		t.Errorf("the policies without a spare made no login wait (%d, %d, %d): the boot is not modelled", len(rule.Waits), len(spread.Waits), len(pack.Waits))
	}
	if spare.NodeHours >= rule.NodeHours {
		t.Errorf("pack + 1 warm spare %.1f node-hours, not fewer than the metric rule's %.1f", spare.NodeHours, rule.NodeHours)
	}
	// On this day the metric rule's few saturated placements beat the
	// spare's (all of the spare's are users going back to their node by
	// their pin); over 20 days it is the other way (TestTwentyDays).
	if spare.Saturated >= pack.Saturated || spare.Saturated >= spread.Saturated || spare.Saturated != spare.SaturatedPinned {
		t.Errorf("saturated placements: warm spare %d (%d by pin), pack %d, spread %d", spare.Saturated, spare.SaturatedPinned, pack.Saturated, spread.Saturated)
	}
	for _, r := range results {
		if r.Max() >= testBoot {
			t.Errorf("%s: a login waited %s, not less than a boot", r.Policy, r.Max())
		}
	}
}

// TestTwentyDays holds the 20-day reading of docs/PERFORMANCE.md: pack
// with one warm spare costs fewer node-hours than the metric rule, sends
// fewer logins to saturated nodes, and makes a tenth as many wait for a
// boot (not none: the goal is not met there).
func TestTwentyDays(t *testing.T) {
	sum := map[string]*struct {
		hours      float64
		waits, sat int
	}{}
	for seed := uint64(1); seed <= 20; seed++ {
		for _, r := range RunDay(NewDay(seed, 60), testBoot, testMax) {
			if sum[r.Policy] == nil {
				sum[r.Policy] = &struct {
					hours      float64
					waits, sat int
				}{}
			}
			s := sum[r.Policy]
			s.hours += r.NodeHours
			s.waits += len(r.Waits)
			s.sat += r.Saturated
		}
	}
	rule, spare := sum["azure metric rule"], sum["pack + 1 warm spare"]
	if rule == nil || spare == nil {
		t.Fatal("a policy is missing")
	}
	if spare.hours >= rule.hours || spare.sat >= rule.sat || spare.waits*10 > rule.waits || spare.waits == 0 {
		t.Errorf("20 days: pack + 1 warm spare %.0f node-hours, %d saturated placements, %d waits; metric rule %.0f, %d, %d (the doc's reading says fewer, fewer, a tenth and not none)",
			spare.hours, spare.sat, spare.waits, rule.hours, rule.sat, rule.waits)
	}
}
