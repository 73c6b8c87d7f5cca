// Package redisstate keeps the balancer's routing state (pins, session
// leases, drain flags) in Redis, so that several poolgate gateways behind
// one load balancer route every user alike. It implements
// balancer.Shared: it holds no routing rule; each Update reads a
// snapshot under WATCH, lets the balancer decide over it, and writes the
// change with MULTI/EXEC, reading and deciding again when another
// gateway wrote in between. Pin notices on a channel keep every
// gateway's copy of the pin table current.
//
// It may import balancer (for its types) and internal/ratelog, and
// nothing else of the project.
package redisstate
