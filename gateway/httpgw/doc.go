// Package httpgw is poolgate's HTTP front end for JupyterHub: it terminates
// TLS, learns which user a request belongs to (the /user/<name>/ path, a
// jupyterhub-user-<name> cookie, the login form, or the gateway's own
// signed affinity cookie), asks the balancer for that user's node and
// reverse-proxies HTTP, WebSocket and server-sent events to the node's hub.
//
// A proven user's browser activity is one HTTP session on their node,
// live while a proven WebSocket or stream of theirs is open or a proven
// request came within the idle window. A request is routed by the user it
// names, but takes or extends a session (a lease, a pin) or wakes a node
// only on an answer of the user's node that proves them (proof.go): a
// login that set the hub's login cookie, a 2xx of their own server on a
// guarded path, an accepted WebSocket. Anonymous requests count nothing.
//
// Every name a request carries is reduced to its canonical form
// (internal/username: ASCII lower case, as JupyterHub's default
// normalize_username does) before it is routed by, so /user/Alice/ and
// "ALICE" in the login form are the user alice of the SSH front end. A
// path naming an invalid user gets 400; an invalid name in a cookie or
// the login form is not used.
//
// With [Options.Users], the gateway serves its users' own page under
// [PagePrefix] (/_poolgate/, a path JupyterHub never uses): signed in
// with the identity provider (identity.Web), a user sees their node and
// its load, the ssh command, their sessions and bound keys, forgets a key
// or moves to another node as `ssh alice+node-3@pool` would. Paths under
// PagePrefix never reach a hub, with the page on or off (off: 404), and
// the page's cookies are taken out of every request passed to a hub.
//
// It takes the balancer through the [Balancer] interface it declares, and
// everything else it needs through [Options] (its metrics in the front
// ends' shared families of gateway/gwmetrics).
package httpgw
