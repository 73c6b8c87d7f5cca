// Package admin serves ops: a JSON API over the balancer's state (nodes,
// sessions, drain and undrain) with bearer-token access control.
//
// Everything the API needs beyond its config and [Pool] comes in
// [Options] (discovery's state, scale-in, metrics). The answers' types
// (wire.go: [NodesJSON], [SessionsJSON], [DrainJSON], [ScaleInJSON],
// [ErrorJSON]) are the API's wire contract, which the poolgate CLI decodes.
//
// A user name the API takes (POST and DELETE /api/users/{user}/pin,
// GET /api/sessions?user=) follows the front ends' rule
// (internal/username): it is used in canonical form ("Alice" is alice),
// and a name the rule refuses is answered 400 with what is wrong with it.
//
// It imports balancer for its snapshot types and internal/username for
// the rule on user names, and never imports discovery; cmd wires it to
// the running balancer.
package admin
