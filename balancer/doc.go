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
//  3. Otherwise the least-loaded node that is up, not draining and not full
//     is chosen: load is live sessions divided by the node's weight; ties are
//     broken at random.
//  4. A draining node takes no new users; users pinned to it still reach it.
//  5. A node that goes down or leaves the pool loses its pins; the user's
//     next lease reports the node it lost ([Lease.Repinned]).
//  6. If no node can take a session, Acquire returns [ErrNoNode].
//
// The package knows nothing of SSH or HTTP and imports no other package of
// this module. Clock and randomness are injected through [Options].
package balancer
