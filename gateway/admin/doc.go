// Package admin serves ops: a JSON API over the balancer's state (nodes,
// sessions, drain and undrain) with bearer-token access control.
//
// It imports balancer for its snapshot types and never imports discovery;
// cmd wires it to the running balancer.
package admin
