package sshgw

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, nil)
	g := newTestGWMetrics(t, m, nil)

	c := dialAs(t, g.addr, "alice", g.userKey)
	s, _ := c.NewSession()
	if _, err := s.Output("out 100000"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := testutil.MetricValue(t, reg, "poolgate_relayed_bytes_total", "protocol", "ssh", "direction", "to_client"); got < 100000 {
		t.Fatalf("bytes to client %v, want at least 100000", got)
	}
	if _, ok := testutil.LookupMetric(t, reg, "poolgate_relayed_bytes_total", "protocol", "ssh", "direction", "to_node"); !ok {
		t.Fatal("no series for the bytes to the node") // an exec sends no channel data; the series is there at 0
	}
	if n := testutil.MetricValue(t, reg, "poolgate_pick_duration_seconds", "protocol", "ssh"); n != 1 {
		t.Fatalf("pick histogram: %v observations, want 1", n)
	}

	other, _ := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), "x")
	_, _ = ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
		User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(other)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if got := testutil.MetricValue(t, reg, "poolgate_auth_failures_total", "method", "publickey", "reason", "key_not_authorized"); got < 1 {
		t.Fatalf("key_not_authorized = %v after a refused key", got)
	}
	for _, r := range []string{"no_node", "node_unreachable", "session_limit"} {
		if got := testutil.MetricValue(t, reg, "poolgate_login_refusals_total", "protocol", "ssh", "reason", r); got != 0 {
			t.Errorf("refusals %s = %v, want 0", r, got)
		}
		if _, ok := testutil.LookupMetric(t, reg, "poolgate_auth_failures_total", "reason", r); ok {
			t.Errorf("poolgate_auth_failures_total has reason %s: availability is not a credential failure", r)
		}
	}
}

// A login the pool cannot take is a refusal, not an auth failure: no
// node up is not somebody guessing passwords.
func TestMetricsRefusalsApartFromAuthFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, nil)
	g := newTestGWMetrics(t, m, nil)
	for _, n := range g.bal.Nodes() {
		if err := g.bal.Drain(n.Name); err != nil {
			t.Fatal(err)
		}
	}
	if c, _, err := dialBanner(g.addr, "alice", g.userKey); err == nil {
		c.Close()
		t.Fatal("a login with every node draining was let in")
	}
	if got := testutil.MetricValue(t, reg, "poolgate_login_refusals_total", "protocol", "ssh", "reason", "no_node"); got != 1 {
		t.Errorf(`poolgate_login_refusals_total{protocol="ssh",reason="no_node"} = %v, want 1`, got)
	}
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() != "poolgate_auth_failures_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			if s.GetCounter().GetValue() != 0 {
				t.Errorf("auth failure counted for a refusal: %v", s.GetLabel())
			}
		}
	}
}

func TestAuthFailedSortsReasons(t *testing.T) {
	for _, tt := range []struct {
		reason  string
		refusal bool
	}{
		{"key_not_authorized", false}, {"bad_user", false}, {"wrong_password", false}, {"other", false},
		{"no_node", true}, {"node_unreachable", true}, {"session_limit", true}, {"signature_limit", true},
		{"node_refused", true}, {"node_host_key", true}, {"too_many_unauthenticated", true},
	} {
		if got := isRefusal(tt.reason); got != tt.refusal {
			t.Errorf("isRefusal(%s) = %v, want %v", tt.reason, got, tt.refusal)
		}
	}
}

func TestFailureReason(t *testing.T) {
	for _, tt := range []struct {
		method string
		err    error
		want   string
	}{
		{"publickey", ErrKeyNotAllowed, "key_not_authorized"},
		{"password", ErrBadUser, "bad_user"},
		{"password", errNodeRefused, "wrong_password"},
		{"publickey", &ssh.BannerError{Err: errNodeRefused}, "node_refused"},
		{"publickey", &ssh.BannerError{Err: ErrHostKeyChanged}, "node_host_key"},
		{"publickey", &ssh.BannerError{Err: errSessionLimit}, "session_limit"},
		{"publickey", &ssh.BannerError{Err: fmt.Errorf("%w (30 a minute)", errSignLimit)}, "signature_limit"},
		{"publickey", &ssh.BannerError{Err: errNodeUnreachable}, "node_unreachable"},
		{"keyboard-interactive", ssh.ErrNoAuth, "other"},
	} {
		if got := failureReason(tt.method, tt.err); got != tt.want {
			t.Errorf("failureReason(%s, %v) = %s, want %s", tt.method, tt.err, got, tt.want)
		}
	}
}
