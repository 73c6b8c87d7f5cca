// Package netx holds what the front ends' listeners share: the key that
// groups client addresses for per-address limits ([AddrKey]), and the
// back-off on temporary accept errors ([AcceptBackoff]).
//
// It imports nothing of poolgate.
package netx
