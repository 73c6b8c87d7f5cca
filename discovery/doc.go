// Package discovery turns sources of instances into node-set updates for
// the balancer, and checks the nodes' health.
//
// A [Source] (the static list from the config here; an Azure scale set in
// discovery/azure) pushes node sets to a [NodeSetter]; a [Checker] probes
// every node on an interval and reports up/down to a [StatusSetter], with
// rise and fall counts so one lost probe does not flap a node. Both
// interfaces are satisfied by *balancer.Balancer; cmd wires them.
//
// discovery may import balancer (for its Node type) and never imports
// gateway.
package discovery
