// Command capacitysim runs one seeded working day of a data-science team
// (08:00 to 19:00 on a virtual clock) against four capacity policies and
// reports, for each, the node-hours paid for, the logins that waited for
// a VM to boot (how many, p50 and max wait), the logins placed on a node
// at or over load.max, the most nodes at once, and the sessions cut by a
// scale-in. Every policy lives the same day: the same arrivals, session
// lengths and per-minute use. The placement is the real balancer's and
// the poolgate policies are the real capacity.Decide; only the nodes, the
// users and Azure's metric rule are simulated. From the repository root:
//
//	go run ./bench/capacitysim                    # seed 1, 60 users, 4m boot, 20 nodes at most
//	go run ./bench/capacitysim -seed 7 -users 120 -boot 6m -max-nodes 30
//
// It prints a Markdown report: the day of -seed, then the sums over -days
// days (seeds -seed onwards, 20 by default). docs/PERFORMANCE.md holds
// the latest and the sources of the model's numbers.
package main
