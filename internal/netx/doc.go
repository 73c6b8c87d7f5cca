// Package netx is the skeleton the front ends (gateway/sshgw,
// gateway/rdpgw) share, so that each of them holds only its protocol:
//
//   - [Server]: the listeners, the accept loop with its back-off on
//     temporary errors ([AcceptBackoff]), a goroutine per connection that
//     recovers a panic with a logged stack, and the set of open
//     connections, so that Shutdown can wait for them and Close can close
//     them;
//   - [Slots]: the caps on connections not yet proven (pre-auth), in all
//     and per client address ([AddrKey]: IPv4 alone, IPv6 by /64), taken
//     in the accept loop and given back when the connection is proven or
//     ends;
//   - [CheckListenAddr]: what a config's listen address must look like.
//
// A front end sets a Server up with its handler and caps, and runs it:
//
//	srv := &netx.Server{
//		Name:    "rdp",
//		Logger:  log,
//		Slots:   &netx.Slots{Max: 256, PerAddress: 16},
//		Handler: func(nc net.Conn, slot *netx.Slot) {
//			// read, authenticate, then slot.Release(); relay.
//		},
//	}
//	go srv.Serve(ln)
//	...
//	err := srv.Shutdown(ctx) // stop accepting, wait, then cut
//
// It imports nothing of poolgate.
package netx
