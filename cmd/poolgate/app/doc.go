// Package app builds a running poolgate from a config: it loads and checks
// the YAML file, creates the balancer, discovery and the gateways, and
// runs them until told to stop. It is the only package that wires concrete
// parts together; the poolgate command and the end-to-end tests use it.
package app
