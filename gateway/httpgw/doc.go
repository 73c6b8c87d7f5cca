// Package httpgw is poolgate's HTTP front end for JupyterHub: it terminates
// TLS, learns which user a request belongs to (the /user/<name>/ path, a
// jupyterhub-user-<name> cookie, the login form, or the gateway's own
// signed affinity cookie), asks the balancer for that user's node and
// reverse-proxies HTTP, WebSocket and server-sent events to the node's hub.
//
// A user's browser activity is one HTTP session on their node, live while
// any WebSocket or event stream of theirs is open or a request came within
// the idle window. Sessions start only once the hub has shown the user is
// logged in (a login that set cookies, or a 2xx/101 answer for a request
// of theirs), so anonymous requests naming a user cannot inflate counts.
//
// It takes the balancer through the [Balancer] interface it declares, and
// everything else it needs through [Options].
package httpgw
