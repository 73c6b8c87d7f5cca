// Package sshgw is the SSH front end: it terminates SSH from users,
// authenticates them, asks the balancer for a node, logs in to that node
// with a short-lived certificate signed by the gateway's user CA (or with
// the user's password, which the node verifies), and relays every channel
// and request unchanged.
//
// Usage:
//
//	keys, _ := sshgw.LoadKeys(stateDir)          // host key, user CA, node pins
//	srv, _ := sshgw.New(cfg, bal, sshgw.Options{Keys: keys, Logger: logger}) // bal: *balancer.Balancer
//	go srv.Serve(listener)
//	...
//	srv.Shutdown(ctx)
//
// Routing happens during authentication, once the user's identity is
// proven (after the public-key signature is verified, or while the node
// checks the password), so that every refusal reaches the user as an SSH
// banner line instead of a bare "Permission denied".
//
// sshgw imports balancer for its types and never imports discovery.
package sshgw
