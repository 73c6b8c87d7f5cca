// Package redisstate keeps the balancer's routing state (pins, session
// leases, drain flags) in Redis, so that several poolgate gateways behind
// one load balancer route every user alike. It implements balancer.Shared
// with one Lua script per operation, so that each decision is atomic and
// costs one round trip.
//
// It may import balancer (for its types) and nothing else of the project.
package redisstate
