package sshgw

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
)

// Metrics are the SSH gateway's Prometheus instruments. A nil *Metrics
// records nothing.
type Metrics struct {
	authFailures *prometheus.CounterVec // by reason
	signatures   *prometheus.CounterVec // user CA signatures, by result
	reused       prometheus.Counter     // node-leg certificates reused instead of signed
	bytes        [2]prometheus.Counter  // to the node, to the client
	pick         prometheus.Histogram
}

// NewMetrics creates the instruments and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_ssh_auth_failures_total",
			Help: "Failed SSH authentication attempts and refused logins, by reason.",
		}, []string{"reason"}),
		pick: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "poolgate_pick_duration_seconds",
			Help:    "Time to choose a node and take a session lease.",
			Buckets: []float64{1e-6, 5e-6, 25e-6, 1e-4, 5e-4, 2.5e-3, 0.01, 0.05},
		}),
	}
	m.signatures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "poolgate_ca_signatures_total",
		Help: "Node-login certificates signed by the user CA, by result: ok, throttled (Key Vault answered 429 past the budget), error.",
	}, []string{"result"})
	m.reused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "poolgate_ca_signatures_reused_total",
		Help: "Node logins that reused a certificate still valid for the same user, key and restrictions instead of asking the CA to sign.",
	})
	for _, r := range []string{"ok", "throttled", "error"} {
		m.signatures.WithLabelValues(r)
	}
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "poolgate_ssh_relayed_bytes_total",
		Help: "Channel data relayed by the SSH gateway, by direction.",
	}, []string{"direction"})
	m.bytes[toNode] = bytes.WithLabelValues("to_node")
	m.bytes[toClient] = bytes.WithLabelValues("to_client")
	reg.MustRegister(m.authFailures, m.pick, bytes, m.signatures, m.reused)
	for _, r := range []string{"key_not_authorized", "bad_user", "wrong_password", "no_node", "node_unreachable",
		"node_refused", "node_host_key", "session_limit", "signature_limit", "too_many_unauthenticated", "other"} {
		m.authFailures.WithLabelValues(r) // export zeros, so rates work from the start
	}
	return m
}

// directions index relay counters.
const (
	toNode   = 0
	toClient = 1
)

func (m *Metrics) authFailed(reason string) {
	if m != nil {
		m.authFailures.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) signed(err error) {
	if m != nil {
		m.signatures.WithLabelValues(signResult(err)).Inc()
	}
}

func (m *Metrics) signatureReused() {
	if m != nil {
		m.reused.Inc()
	}
}

func (m *Metrics) relayed(dir, n int) {
	if m != nil {
		m.bytes[dir].Add(float64(n))
	}
}

func (m *Metrics) picked(seconds float64) {
	if m != nil {
		m.pick.Observe(seconds)
	}
}

// failureReason classifies an authentication error for the metrics.
func failureReason(method string, err error) string {
	var be *ssh.BannerError
	if errors.As(err, &be) && be.Err != nil {
		err = be.Err
	}
	switch {
	case errors.Is(err, ErrKeyNotAllowed):
		return "key_not_authorized"
	case errors.Is(err, ErrBadUser):
		return "bad_user"
	case errors.Is(err, balancer.ErrNoNode):
		return "no_node"
	case errors.Is(err, ErrHostKeyChanged):
		return "node_host_key"
	case errors.Is(err, errSessionLimit):
		return "session_limit"
	case errors.Is(err, errSignLimit):
		return "signature_limit"
	case errors.Is(err, errNodeUnreachable):
		return "node_unreachable"
	case errors.Is(err, errNodeRefused):
		if method == "password" || method == "keyboard-interactive" {
			return "wrong_password"
		}
		return "node_refused"
	}
	return "other"
}
