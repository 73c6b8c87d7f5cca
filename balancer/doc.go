// Package balancer owns the truth about the pool: the node set, each node's
// health and drain state, the user→node affinity, and the live session
// registry.
//
// Its one decision is where a user's next session goes. Front ends (the SSH,
// HTTP and RDP gateways) call [Balancer.Acquire] before relaying a session
// and release the returned [Lease] when it ends ([Lease.Fail] when the
// node's side broke, [Balancer.NodeFailed] when a dial or login to a node
// failed); discovery feeds it the node set ([Balancer.SetNodes]) and health
// ([Balancer.SetHealth], per protocol). Ops read [Balancer.Nodes] and
// [Balancer.Sessions] and call [Balancer.Drain].
//
// The rules below live once, in rules.go, as pure functions over a user's
// pin and the pool as the deciding gateway sees it. The balancer's memory
// applies their verdicts under its lock; with [Options.Shared] (Redis) the
// shared state reads a snapshot, the same functions decide over it, and
// the shared state applies the verdict by compare-and-set. Protocols are
// the table in nodes.go, beside the Node addresses they read.
//
// Routing rules (docs/DESIGN.md gives the reasons):
//
//  1. A user is a login name, in the canonical form the front ends give it.
//  2. A user with a live pin to a node that is alive (not gone, see 5)
//     goes there, even while its checks fail. A pin lives while the user
//     has a session open and for Config.AffinityGrace after the last one
//     closes.
//  3. Otherwise the node with the lowest placement score that is up, not
//     draining and not full is chosen; ties are broken at random. The score
//     blends what the node really carries with its sessions: the peak of
//     its measured CPU (run queue per CPU), memory, GPU and GPU memory use
//     ([Balancer.SetLoad], from the nodes' exporters), plus
//     LoadConfig.SessionCost (default 0.1) per live session per weight. A
//     node at or above LoadConfig.Max on any resource takes no new user
//     while a node below it can (among such nodes the score still orders
//     them). A node without figures, or whose figures are older than
//     LoadConfig.StaleAfter, is judged by its sessions alone and never
//     excluded. The session term moves at once with each login, while
//     load figures lag by a scrape and load1's minute average, so a burst
//     of logins still spreads.
//  4. A draining node takes no new users; users pinned to it still reach it.
//  5. A node whose check fails takes no new user but keeps its users; a
//     node that is gone loses its pins: a dial or login to it failed, a
//     session on it failed while its check failed, it stayed down past
//     Config.RepinAfter with no session, or it left the pool. The user's
//     next lease reports the node it lost ([Lease.Repinned]). When every
//     node's check fails, a new user goes to one that is not gone.
//  6. If no node can take a session, Acquire returns [ErrNoNode].
//
// The package knows nothing of SSH or HTTP and imports no other package of
// this module. Clock and randomness are injected through [Options].
package balancer
