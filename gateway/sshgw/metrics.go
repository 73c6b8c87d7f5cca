package sshgw

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/gwmetrics"
)

// Metrics are the SSH gateway's Prometheus instruments: its part of the
// front ends' shared families (gateway/gwmetrics: picks, relayed bytes,
// refusals, auth failures) and the user CA's own counters. A nil
// *Metrics records nothing.
type Metrics struct {
	front      *gwmetrics.Front
	signatures *prometheus.CounterVec // user CA signatures, by result
	reused     prometheus.Counter     // node-leg certificates reused instead of signed
}

// refusalReasons are the failures that say the pool could not take the
// login (poolgate_login_refusals_total); every other reason is the user's
// credentials (poolgate_auth_failures_total).
var refusalReasons = []string{gwmetrics.NoNode, gwmetrics.NodeUnreachable, gwmetrics.SessionLimit,
	"signature_limit", "node_refused", "node_host_key", gwmetrics.TooManyUnauthentic}

// NewMetrics creates the SSH instruments in set, the gateway's shared
// families, and registers the CA counters with reg. A nil set is created
// in reg (a gateway with only the SSH front end, or a test).
func NewMetrics(reg prometheus.Registerer, set *gwmetrics.Set) *Metrics {
	if set == nil {
		set = gwmetrics.New(reg)
	}
	m := &Metrics{front: set.Front(balancer.SSH, refusalReasons...)}
	for _, method := range []string{"publickey", "password", "keyboard-interactive"} {
		m.front.AuthReasons(method, "key_not_authorized", "bad_user", "wrong_password", "other")
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
	reg.MustRegister(m.signatures, m.reused)
	return m
}

// directions index relay counters.
const (
	toNode   = gwmetrics.ToNode
	toClient = gwmetrics.ToClient
)

// authFailed counts a failed login attempt: as a refusal when the pool
// said no, else as a failure of the user's credentials.
func (m *Metrics) authFailed(method, reason string) {
	if m == nil {
		return
	}
	if isRefusal(reason) {
		m.front.Refused(reason)
		return
	}
	m.front.AuthFailed(method, reason)
}

func isRefusal(reason string) bool {
	for _, r := range refusalReasons {
		if r == reason {
			return true
		}
	}
	return false
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
		m.front.Relayed(dir, n)
	}
}

func (m *Metrics) picked(seconds float64) {
	if m != nil {
		m.front.Picked(seconds)
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
		return gwmetrics.NoNode
	case errors.Is(err, ErrHostKeyChanged):
		return "node_host_key"
	case errors.Is(err, errSessionLimit):
		return gwmetrics.SessionLimit
	case errors.Is(err, errSignLimit):
		return "signature_limit"
	case errors.Is(err, errNodeUnreachable):
		return gwmetrics.NodeUnreachable
	case errors.Is(err, errNodeRefused):
		if method == "password" || method == "keyboard-interactive" {
			return "wrong_password"
		}
		return "node_refused"
	}
	return "other"
}
