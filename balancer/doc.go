// Package balancer owns the truth about the pool: the node set, each node's
// health and drain state, the user→node affinity, and the live session
// registry.
//
// Its one decision is where a user's next session goes. Front ends (the SSH
// and HTTP gateways) call [Balancer.Acquire] before relaying a session and
// release the returned [Lease] when it ends; discovery feeds it the node set
// ([Balancer.SetNodes]) and health ([Balancer.SetHealth]). Ops read
// [Balancer.Nodes] and [Balancer.Sessions] and call [Balancer.Drain].
//
// Routing rules (docs/DESIGN.md gives the reasons):
//
//  1. A user is a login name.
//  2. A user with a live pin to a node that is up goes there. A pin lives
//     while the user has a session open and for Config.AffinityGrace after
//     the last one closes.
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
//  5. A node that goes down or leaves the pool loses its pins; the user's
//     next lease reports the node it lost ([Lease.Repinned]).
//  6. If no node can take a session, Acquire returns [ErrNoNode].
//
// The package knows nothing of SSH or HTTP and imports no other package of
// this module. Clock and randomness are injected through [Options].
package balancer
