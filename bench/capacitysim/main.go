package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

var (
	seed     = flag.Uint64("seed", 1, "seed of the team's day")
	users    = flag.Int("users", 60, "users in the team")
	boot     = flag.Duration("boot", 4*time.Minute, "a DSVM's time from the start order to taking logins")
	maxNodes = flag.Int("max-nodes", 20, "most nodes the pool may grow to (every policy)")
	days     = flag.Int("days", 20, "days (seeds seed, seed+1, …) summed in the second table; 1: none")
)

func main() {
	flag.Parse()
	if *users < 1 || *maxNodes < 1 || *boot < 0 || *days < 1 {
		fmt.Fprintln(os.Stderr, "capacitysim: -users, -max-nodes and -days must be at least 1, -boot not negative")
		os.Exit(2)
	}
	fmt.Printf("## Capacity: a team's day\n\n")
	fmt.Printf("`go run ./bench/capacitysim -seed %d -users %d -boot %s -max-nodes %d -days %d`\n\n", *seed, *users, *boot, *maxNodes, *days)
	results := RunDay(NewDay(*seed, *users), *boot, *maxNodes)
	fmt.Printf("### Seed %d: %d users, %d logins over 08:00–19:00\n\n", *seed, *users, results[0].Logins-results[0].Cut)
	report(os.Stdout, results)
	if *days > 1 {
		var all [][]Result
		for i := range uint64(*days) {
			all = append(all, RunDay(NewDay(*seed+i, *users), *boot, *maxNodes))
		}
		fmt.Printf("\n### %d days (seeds %d to %d)\n\n", *days, *seed, *seed+uint64(*days)-1)
		summary(os.Stdout, all)
	}
}

// RunDay lives the day under every policy, the metric rule first.
func RunDay(d *Day, boot time.Duration, maxNodes int) []Result {
	var out []Result
	for _, p := range Policies(maxNodes) {
		out = append(out, Run(d, p, boot, maxNodes))
	}
	return out
}

// report prints one day as a Markdown table, node-hours also as a ratio
// to the first policy's (Azure's metric rule).
func report(w io.Writer, results []Result) {
	fmt.Fprintln(w, "| policy | node-hours | vs metric rule | logins waited for a boot | p50 wait | max wait | saturated placements (by pin) | peak nodes | sessions cut |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range results {
		fmt.Fprintf(w, "| %s | %.1f | %.2f× | %d | %s | %s | %d (%d) | %d | %d |\n",
			r.Policy, r.NodeHours, r.NodeHours/results[0].NodeHours, len(r.Waits), minutes(r.P50()), minutes(r.Max()), r.Saturated, r.SaturatedPinned, r.PeakNodes, r.Cut)
	}
	for _, r := range results {
		if r.Unplaced > 0 {
			fmt.Fprintf(w, "\n%s: %d logins still waiting at 19:00.\n", r.Policy, r.Unplaced)
		}
	}
}

// summary prints several days: node-hours as the mean and the ratio of
// the sums to the metric rule's (with the range of the daily ratios),
// the other counts summed.
func summary(w io.Writer, all [][]Result) {
	fmt.Fprintln(w, "| policy | node-hours a day | vs metric rule (daily range) | logins waited (days with one) | max wait | saturated placements (by pin) | peak nodes (most) | sessions cut |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for i := range all[0] {
		var nh, base float64
		lo, hi := 1e9, 0.0
		var waited, waitDays, sat, satPin, peak, cut, unplaced int
		var longest time.Duration
		for _, day := range all {
			r := day[i]
			nh += r.NodeHours
			base += day[0].NodeHours
			ratio := r.NodeHours / day[0].NodeHours
			lo, hi = min(lo, ratio), max(hi, ratio)
			waited += len(r.Waits)
			if len(r.Waits) > 0 {
				waitDays++
			}
			longest = max(longest, r.Max())
			sat += r.Saturated
			satPin += r.SaturatedPinned
			peak = max(peak, r.PeakNodes)
			cut += r.Cut
			unplaced += r.Unplaced
		}
		fmt.Fprintf(w, "| %s | %.1f | %.2f× (%.2f–%.2f) | %d (%d) | %s | %d (%d) | %d | %d |\n",
			all[0][i].Policy, nh/float64(len(all)), nh/base, lo, hi, waited, waitDays, minutes(longest), sat, satPin, peak, cut)
		if unplaced > 0 {
			fmt.Fprintf(w, "\n%s: %d logins still waiting at 19:00 over the days.\n", all[0][i].Policy, unplaced)
		}
	}
}

func minutes(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f min", d.Minutes())
}
