// Package admin serves ops: a JSON API over the balancer's state (nodes,
// sessions, drain and undrain) with bearer-token access control.
//
// Everything the API needs beyond its config and [Pool] comes in
// [Options] (discovery's state, scale-in, metrics). The answers' types
// (wire.go: [NodesJSON], [SessionsJSON], [DrainJSON], [ScaleInJSON],
// [ErrorJSON]) are the API's wire contract, which the poolgate CLI decodes.
//
// It imports balancer for its snapshot types and never imports discovery;
// cmd wires it to the running balancer.
package admin
