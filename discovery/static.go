package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/poolgate/poolgate/balancer"
)

// NodeSetter receives the current node set.
type NodeSetter interface {
	SetNodes([]balancer.Node)
}

// Fanout passes every node set to each of its setters in order.
type Fanout []NodeSetter

// SetNodes implements NodeSetter.
func (f Fanout) SetNodes(nodes []balancer.Node) {
	for _, s := range f {
		s.SetNodes(nodes)
	}
}

// Source discovers nodes and pushes the set to a NodeSetter until ctx ends.
type Source interface {
	Run(ctx context.Context, to NodeSetter) error
}

// StaticNode is one entry of discovery.static in the config.
type StaticNode struct {
	Name   string  `yaml:"name"`
	SSH    string  `yaml:"ssh"`    // host:port of sshd
	HTTP   string  `yaml:"http"`   // host:port of JupyterHub; optional
	RDP    string  `yaml:"rdp"`    // host:port of the RDP server (Windows, xrdp); optional
	Weight float64 `yaml:"weight"` // relative capacity; default 1
	// Metrics and GPUMetrics are host:port of the node's node_exporter and
	// dcgm-exporter, for placement by load; optional.
	Metrics    string `yaml:"metrics"`
	GPUMetrics string `yaml:"gpu_metrics"`
}

// Config is the YAML section "discovery": a static list of nodes, or an
// Azure scale set whose instances are found at run time. Exactly one.
type Config struct {
	Static []StaticNode `yaml:"static"`
	Azure  *AzureConfig `yaml:"azure"`
}

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.Azure != nil {
		az := c.Azure.WithDefaults()
		c.Azure = &az
	}
	return c
}

// Validate reports every bad entry (joined, one error each), naming its key.
func (c Config) Validate() error {
	var errs []error
	if c.Azure != nil {
		if len(c.Static) > 0 {
			errs = append(errs, fmt.Errorf("static: use either a static list or azure, not both"))
		}
		if err := c.Azure.WithDefaults().Validate(); err != nil {
			for _, e := range splitJoined(err) {
				errs = append(errs, fmt.Errorf("azure.%w", e))
			}
		}
		return errors.Join(errs...)
	}
	if len(c.Static) == 0 {
		errs = append(errs, fmt.Errorf("static: list at least one node (name, ssh), or set azure to find a scale set's instances"))
	}
	names := map[string]int{}
	for i, n := range c.Static {
		key := fmt.Sprintf("static[%d]", i)
		if n.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: missing", key))
		} else if j, dup := names[n.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already used by static[%d]", key, n.Name, j))
		}
		names[n.Name] = i
		if err := CheckHostPort(n.SSH); err != nil {
			errs = append(errs, fmt.Errorf("%s.ssh: %w", key, err))
		}
		if n.HTTP != "" {
			if err := CheckHostPort(n.HTTP); err != nil {
				errs = append(errs, fmt.Errorf("%s.http: %w", key, err))
			}
		}
		if n.RDP != "" {
			if err := CheckHostPort(n.RDP); err != nil {
				errs = append(errs, fmt.Errorf("%s.rdp: %w", key, err))
			}
		}
		if n.Weight < 0 {
			errs = append(errs, fmt.Errorf("%s.weight: must not be negative, got %v", key, n.Weight))
		}
		for _, a := range []struct{ key, addr string }{{"metrics", n.Metrics}, {"gpu_metrics", n.GPUMetrics}} {
			if a.addr != "" {
				if err := CheckHostPort(a.addr); err != nil {
					errs = append(errs, fmt.Errorf("%s.%s: %w", key, a.key, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// CheckHostPort reports whether addr is a usable host:port with a numeric
// port in 1..65535.
func CheckHostPort(addr string) error {
	if addr == "" {
		return fmt.Errorf("missing (want host:port)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be a number from 1 to 65535", addr)
	}
	return nil
}

// Static is a Source with a fixed node list.
type Static []StaticNode

// Nodes returns the list as balancer nodes.
func (s Static) Nodes() []balancer.Node {
	out := make([]balancer.Node, len(s))
	for i, n := range s {
		out[i] = balancer.Node{Name: n.Name, SSH: n.SSH, HTTP: n.HTTP, RDP: n.RDP, Weight: n.Weight, Metrics: n.Metrics, GPUMetrics: n.GPUMetrics}
	}
	return out
}

// Run pushes the list once and returns when ctx ends.
func (s Static) Run(ctx context.Context, to NodeSetter) error {
	to.SetNodes(s.Nodes())
	<-ctx.Done()
	return nil
}

// splitJoined is the errors that errors.Join put together, or err alone.
func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// StaticSource is a Source whose list can be replaced while it runs (a
// reload of discovery.static): the new list is pushed at once.
type StaticSource struct {
	mu    sync.Mutex
	nodes Static
	to    NodeSetter // set by Run
}

// NewStaticSource returns a source pushing nodes.
func NewStaticSource(nodes Static) *StaticSource { return &StaticSource{nodes: nodes} }

// Run pushes the list, and each new one Set gives, until ctx ends.
func (s *StaticSource) Run(ctx context.Context, to NodeSetter) error {
	s.mu.Lock()
	s.to = to
	to.SetNodes(s.nodes.Nodes())
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.to = nil
	s.mu.Unlock()
	return nil
}

// Set replaces the list and pushes it if the source runs.
func (s *StaticSource) Set(nodes Static) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes = nodes
	if s.to != nil {
		s.to.SetNodes(nodes.Nodes())
	}
}
