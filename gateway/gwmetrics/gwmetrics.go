package gwmetrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolgate/poolgate/balancer"
)

// Directions of relayed bytes.
const (
	ToNode   = 0 // from the client to the node
	ToClient = 1 // from the node to the client
)

// Refusal reasons shared by the front ends: the pool, not the user's
// credentials, said no. None of them is a sign of password guessing.
const (
	NoNode             = "no_node"                  // no node can take the session
	NodeUnreachable    = "node_unreachable"         // the chosen nodes took no connection
	SessionLimit       = "session_limit"            // the user holds balancer.max_sessions_per_user
	TooManyUnauthentic = "too_many_unauthenticated" // no pre-auth slot (in all or for the address)
	BadToken           = "bad_token"                // an RD Gateway token was forged, expired or absent
	TargetRefused      = "target_refused"           // an RD Gateway channel named a host other than the user's node
)

// Set is the families of one gateway. Create it with New.
type Set struct {
	pick     *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	refusals *prometheus.CounterVec
	auth     *prometheus.CounterVec
	requests *prometheus.CounterVec
}

// New creates the families and registers them with reg.
func New(reg prometheus.Registerer) *Set {
	s := &Set{
		pick: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "poolgate_pick_duration_seconds",
			Help:    "Time to choose a node for a new connection or request, by protocol.",
			Buckets: []float64{1e-6, 5e-6, 25e-6, 1e-4, 5e-4, 2.5e-3, 0.01, 0.05},
		}, []string{"protocol"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_relayed_bytes_total",
			Help: "Bytes relayed between clients and nodes, by protocol and direction (to_node, to_client): SSH channel data, HTTP bodies and WebSocket traffic, RDP stream bytes.",
		}, []string{"protocol", "direction"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_login_refusals_total",
			Help: "Connections or logins the pool could not take, by protocol and reason (no_node, node_unreachable, session_limit, too_many_unauthenticated, ...): availability, not wrong credentials.",
		}, []string{"protocol", "reason"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_auth_failures_total",
			Help: "Failed authentication attempts by the user's credentials, by method and reason (key_not_authorized, bad_user, wrong_password, other).",
		}, []string{"method", "reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_http_requests_total",
			Help: "Requests answered by the HTTP front end, by status code (the hub's, or the gateway's own 503, 400, ...).",
		}, []string{"code"}),
	}
	reg.MustRegister(s.pick, s.bytes, s.refusals, s.auth, s.requests)
	return s
}

// Front is one protocol's view of the families; a nil *Front records
// nothing.
type Front struct {
	set      *Set
	pick     prometheus.Observer
	bytes    [2]prometheus.Counter
	refusals *prometheus.CounterVec
}

// Front returns the instruments of protocol p, with its relayed bytes and
// pick histogram exported from the start (so rates work at once) and the
// given refusal reasons at zero. A nil Set returns nil.
func (s *Set) Front(p balancer.Protocol, reasons ...string) *Front {
	if s == nil {
		return nil
	}
	l := prometheus.Labels{"protocol": string(p)}
	f := &Front{set: s, pick: s.pick.With(l), refusals: s.refusals.MustCurryWith(l)}
	f.bytes[ToNode] = s.bytes.WithLabelValues(string(p), "to_node")
	f.bytes[ToClient] = s.bytes.WithLabelValues(string(p), "to_client")
	for _, r := range reasons {
		f.refusals.WithLabelValues(r)
	}
	return f
}

// Picked records how long choosing a node took.
func (f *Front) Picked(seconds float64) {
	if f != nil {
		f.pick.Observe(seconds)
	}
}

// Relayed counts n bytes in direction dir (ToNode or ToClient).
func (f *Front) Relayed(dir, n int) {
	if f != nil && n > 0 {
		f.bytes[dir].Add(float64(n))
	}
}

// Refused counts a connection or login the pool could not take.
func (f *Front) Refused(reason string) {
	if f != nil {
		f.refusals.WithLabelValues(reason).Inc()
	}
}

// AuthFailed counts a credential the gateway (or the node) did not
// accept.
func (f *Front) AuthFailed(method, reason string) {
	if f != nil {
		f.set.auth.WithLabelValues(method, reason).Inc()
	}
}

// AuthReasons exports zeros for the failures of method, so rates work
// from the start.
func (f *Front) AuthReasons(method string, reasons ...string) {
	if f != nil {
		for _, r := range reasons {
			f.set.auth.WithLabelValues(method, r)
		}
	}
}

// Answered counts one HTTP answer with status code.
func (f *Front) Answered(code int) {
	if f != nil {
		f.set.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}
