package admin

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolgate/poolgate/balancer"
)

// Counts is what the pool collector reads besides the snapshot.
type Counts interface {
	Started(balancer.Protocol) uint64
	Ended(balancer.Protocol) uint64
}

// poolCollector exports the pool's state at scrape time from the
// balancer's snapshot, so routing does no bookkeeping for metrics.
type poolCollector struct {
	pool   Pool
	counts Counts
}

var (
	descSessions = prometheus.NewDesc("poolgate_node_sessions", "Live sessions on a node, by protocol.", []string{"node", "protocol"}, nil)
	descState    = prometheus.NewDesc("poolgate_node_state", "1 for the node's current state (up, down or draining), 0 for the others.", []string{"node", "state"}, nil)
	descUsers    = prometheus.NewDesc("poolgate_node_users", "Users with a live session on a node.", []string{"node"}, nil)
	descPinned   = prometheus.NewDesc("poolgate_node_pinned_users", "Users pinned to a node, including those idle within the affinity grace.", []string{"node"}, nil)
	descChanged  = prometheus.NewDesc("poolgate_node_state_change_timestamp_seconds", "When the node's state last changed (Unix time).", []string{"node"}, nil)
	descStarted  = prometheus.NewDesc("poolgate_sessions_started_total", "Sessions started, by protocol.", []string{"protocol"}, nil)
	descEnded    = prometheus.NewDesc("poolgate_sessions_ended_total", "Sessions ended, by protocol.", []string{"protocol"}, nil)
	descDegraded = prometheus.NewDesc("poolgate_shared_state_degraded", "1 while the shared state (Redis) does not answer and this gateway routes from its own view.", nil, nil)
	// A node's measured load, from its exporters; each is absent when not
	// measured or stale.
	descLoadCPU  = prometheus.NewDesc("poolgate_node_load1_per_cpu", "A node's run queue per CPU: its 1-minute load average divided by its CPUs (it can exceed 1). Absent when not measured or stale.", []string{"node"}, nil)
	descLoadMem  = prometheus.NewDesc("poolgate_node_memory_used_ratio", "The fraction of a node's memory in use, from node_exporter's MemAvailable and MemTotal. Absent when not measured or stale.", []string{"node"}, nil)
	descLoadGPU  = prometheus.NewDesc("poolgate_node_gpu_utilization_ratio", "The utilisation (0-1) of a node's least-used GPU, from dcgm-exporter. Absent when not measured or stale.", []string{"node"}, nil)
	descLoadGMem = prometheus.NewDesc("poolgate_node_gpu_memory_used_ratio", "The fraction of GPU memory in use on that same least-used GPU, from dcgm-exporter. Absent when not measured or stale.", []string{"node"}, nil)
	descLoadAge  = prometheus.NewDesc("poolgate_node_load_timestamp_seconds", "When a node's load figures were taken (Unix time).", []string{"node"}, nil)
)

// NewCollector returns a Prometheus collector over the pool.
func NewCollector(pool Pool, counts Counts) prometheus.Collector {
	return &poolCollector{pool: pool, counts: counts}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descState, descUsers, descPinned, descChanged, descStarted, descEnded, descDegraded, descLoadCPU, descLoadMem, descLoadGPU, descLoadGMem, descLoadAge} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.pool.Nodes() {
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(n.Sessions.Of(balancer.SSH)), n.Name, "ssh")
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(n.Sessions.Of(balancer.HTTP)), n.Name, "http")
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(n.Sessions.Of(balancer.RDP)), n.Name, "rdp")
		if n.Load.Measured() {
			ch <- prometheus.MustNewConstMetric(descLoadAge, prometheus.GaugeValue, float64(n.Load.At.UnixNano())/1e9, n.Name)
			if !n.LoadStale {
				for _, r := range []struct {
					desc *prometheus.Desc
					v    float64
				}{{descLoadCPU, n.Load.CPU}, {descLoadMem, n.Load.Memory}, {descLoadGPU, n.Load.GPU}, {descLoadGMem, n.Load.GPUMemory}} {
					if f := figure(r.v); f != nil {
						ch <- prometheus.MustNewConstMetric(r.desc, prometheus.GaugeValue, *f, n.Name)
					}
				}
			}
		}
		for _, st := range []balancer.State{balancer.StateUp, balancer.StateDown, balancer.StateDraining} {
			v := 0.0
			if n.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, n.Name, string(st))
		}
		ch <- prometheus.MustNewConstMetric(descUsers, prometheus.GaugeValue, float64(len(n.Users)), n.Name)
		ch <- prometheus.MustNewConstMetric(descPinned, prometheus.GaugeValue, float64(n.Pinned), n.Name)
		ch <- prometheus.MustNewConstMetric(descChanged, prometheus.GaugeValue, float64(n.Changed.UnixNano())/1e9, n.Name)
	}
	if st := stateOf(c.pool); st.Backend == "redis" {
		v := 0.0
		if st.Degraded {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descDegraded, prometheus.GaugeValue, v)
	}
	for _, p := range []balancer.Protocol{balancer.SSH, balancer.HTTP, balancer.RDP} {
		ch <- prometheus.MustNewConstMetric(descStarted, prometheus.CounterValue, float64(c.counts.Started(p)), string(p))
		ch <- prometheus.MustNewConstMetric(descEnded, prometheus.CounterValue, float64(c.counts.Ended(p)), string(p))
	}
}

func (s *Server) metricsHandler(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.metrics.ServeHTTP(w, r)
}

var (
	descDiscStale   = prometheus.NewDesc("poolgate_discovery_stale", "1 while the last scale-set listing failed and the node set is the last good one.", nil, nil)
	descDiscSuccess = prometheus.NewDesc("poolgate_discovery_last_success_timestamp_seconds", "When the scale set was last listed (Unix time).", nil, nil)
	descDiscLive    = prometheus.NewDesc("poolgate_discovery_live_instances", "Running, provisioned instances in the last good listing.", nil, nil)
	descDiscStart   = prometheus.NewDesc("poolgate_discovery_starting", "1 while scale from zero waits for a node to start.", nil, nil)
	descProtected   = prometheus.NewDesc("poolgate_node_protected", "1 if the node's instance carries scale-in protection.", []string{"node"}, nil)
)

// discoveryCollector exports discovery's state at scrape time.
type discoveryCollector struct{ d Discovery }

// NewDiscoveryCollector returns a Prometheus collector over discovery's
// state (for a discovered pool, such as an Azure scale set).
func NewDiscoveryCollector(d Discovery) prometheus.Collector { return discoveryCollector{d} }

func (c discoveryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDiscStale, descDiscSuccess, descDiscLive, descDiscStart, descProtected} {
		ch <- d
	}
}

func (c discoveryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(descDiscStale, prometheus.GaugeValue, b(st.Stale))
	if st.LastSuccess != nil {
		ch <- prometheus.MustNewConstMetric(descDiscSuccess, prometheus.GaugeValue, float64(st.LastSuccess.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(descDiscLive, prometheus.GaugeValue, float64(st.Live))
	ch <- prometheus.MustNewConstMetric(descDiscStart, prometheus.GaugeValue, b(st.Starting))
	for _, name := range st.Protected {
		ch <- prometheus.MustNewConstMetric(descProtected, prometheus.GaugeValue, 1, name)
	}
}
