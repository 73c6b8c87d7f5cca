// Package sshgw is the SSH front end: it terminates SSH from users,
// authenticates them, asks the balancer for a node, logs in to that node
// with a short-lived certificate signed by the gateway's user CA (or with
// the user's password, which the node verifies), and relays the
// connection's channels and requests.
//
// Usage:
//
//	keys, _ := sshgw.LoadKeys(stateDir) // host key, user CA, nodes' known host keys
//	srv, _ := sshgw.New(cfg, bal, sshgw.Options{Keys: keys, Logger: logger}) // bal: *balancer.Balancer
//	go srv.Serve(listener)
//	...
//	srv.Shutdown(ctx)
//
// Routing happens during authentication, once the user's identity is
// proven (after the public-key signature is verified, or while the node
// checks the password), so that every refusal reaches the user as an SSH
// banner line instead of a bare "Permission denied". A user who finds no
// node may wait while Options.Starter starts one (scale from zero): a
// proven key always, a password login (anyone's until the node accepts
// it) only within Options.PasswordStarts.
//
// What is relayed: every channel and channel request both ways, and global
// requests in order, with three exceptions: OpenSSH's host-key requests
// (hostkeys-00, hostkeys-prove-00) are dropped, since they are about the
// leg they arrive on; keepalives are answered by the gateway itself; and a
// session channel's EOF is held until the node's exit status has been
// passed on, since some clients close the channel at EOF.
//
// Vocabulary, used throughout the package:
//
//   - A session is one user connection relayed to one node: one lease in
//     the balancer, counted as one SSH session by ops (type session).
//   - The two legs of a session are the client (the user's connection to
//     the gateway) and the node (the gateway's login to the node,
//     nodeConn). Bytes flow toNode or toClient.
//   - A session channel is a channel of SSH type "session" that the client
//     opened: a shell, a command or a subsystem such as sftp. Notices
//     ("the gateway is shutting down") go to its stderr.
//   - A relayed channel is a pair: near is the side that opened it, far
//     its twin on the other leg (near is the client for a shell, the node
//     for a -R forward).
//
// The login name is reduced to its canonical form (internal/username:
// ASCII lower case) before anything else sees it: "Alice" and
// "ALICE+node-3" are the user alice, whose authorized_keys file, node
// login, certificate principal, sessions and pin all say "alice".
//
// Node-login certificates are reused for the same user, key and
// restrictions while more than half their validity is left, and the
// signatures one user causes are capped per minute (certcache.go): with
// the CA in Key Vault every signature spends the vault's shared budget.
//
// sshgw imports balancer for its types, internal/username for the rule
// on user names, gateway/keyvault for its error sentinels (to count
// throttling) and gateway/gwmetrics for the front ends' shared metric
// families, and never imports discovery.
package sshgw
