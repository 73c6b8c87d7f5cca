package gwmetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/testutil"
)

func TestNilRecordsNothing(t *testing.T) {
	var s *Set
	f := s.Front(balancer.SSH, NoNode)
	if f != nil {
		t.Fatal("a nil Set gave a Front")
	}
	f.Picked(1)
	f.Relayed(ToNode, 1)
	f.Refused(NoNode)
	f.AuthFailed("password", "wrong_password")
	f.AuthReasons("password", "wrong_password")
	f.Answered(200)
}

func TestFrontsShareFamilies(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New(reg)
	ssh := s.Front(balancer.SSH, NoNode, SessionLimit)
	rdp := s.Front(balancer.RDP, NoNode)
	ssh.AuthReasons("publickey", "key_not_authorized")
	for _, tt := range []struct {
		name   string
		labels []string
	}{
		{"poolgate_login_refusals_total", []string{"protocol", "ssh", "reason", "no_node"}},
		{"poolgate_login_refusals_total", []string{"protocol", "ssh", "reason", "session_limit"}},
		{"poolgate_login_refusals_total", []string{"protocol", "rdp", "reason", "no_node"}},
		{"poolgate_relayed_bytes_total", []string{"protocol", "rdp", "direction", "to_client"}},
		{"poolgate_pick_duration_seconds", []string{"protocol", "rdp"}},
		{"poolgate_auth_failures_total", []string{"method", "publickey", "reason", "key_not_authorized"}},
	} {
		if v := testutil.MetricValue(t, reg, tt.name, tt.labels...); v != 0 {
			t.Errorf("%s%v = %v before anything happened", tt.name, tt.labels, v)
		}
	}
	rdp.Relayed(ToClient, 100)
	rdp.Relayed(ToNode, 0)
	ssh.Relayed(ToNode, 7)
	rdp.Refused(NodeUnreachable)
	ssh.AuthFailed("password", "wrong_password")
	rdp.Picked(0.001)
	ssh.Answered(503)
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"poolgate_relayed_bytes_total", []string{"protocol", "rdp", "direction", "to_client"}, 100},
		{"poolgate_relayed_bytes_total", []string{"protocol", "rdp", "direction", "to_node"}, 0},
		{"poolgate_relayed_bytes_total", []string{"protocol", "ssh", "direction", "to_node"}, 7},
		{"poolgate_login_refusals_total", []string{"protocol", "rdp", "reason", "node_unreachable"}, 1},
		{"poolgate_auth_failures_total", []string{"method", "password", "reason", "wrong_password"}, 1},
		{"poolgate_pick_duration_seconds", []string{"protocol", "rdp"}, 1},
		{"poolgate_http_requests_total", []string{"code", "503"}, 1},
	} {
		if v := testutil.MetricValue(t, reg, tt.name, tt.labels...); v != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, v, tt.want)
		}
	}
}
