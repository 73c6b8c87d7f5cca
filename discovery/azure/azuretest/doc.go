// Package azuretest is a small Azure for tests: a VM scale set whose VMs,
// network interfaces, capacity and protection live in memory, served
// through the Azure SDK's own fake servers (armcompute/v8/fake,
// armnetwork/v9/fake), so that the real SDK clients, pagers and pollers
// run against it and nothing leaves the process.
//
// The SDK fakes cannot put headers on a response or return a 429; World
// wraps their transport to add ARM's rate-limit headers and to answer
// calls with injected failures (a 429 with Retry-After, a 500), as real
// HTTP responses that the SDK turns into *azcore.ResponseError.
package azuretest
