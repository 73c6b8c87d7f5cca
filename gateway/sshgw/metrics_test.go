package sshgw

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	g := newTestGWMetrics(t, m, nil)

	c := dialAs(t, g.addr, "alice", g.userKey)
	s, _ := c.NewSession()
	if _, err := s.Output("out 100000"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := testutil.ToFloat64(m.bytes[toClient]); got < 100000 {
		t.Fatalf("bytes to client %v, want at least 100000", got)
	}
	if n := testutil.CollectAndCount(m.pick); n != 1 {
		t.Fatalf("pick histogram: %d series", n)
	}

	other, _ := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), "x")
	_, _ = ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
		User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(other)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if got := testutil.ToFloat64(m.authFailures.WithLabelValues("key_not_authorized")); got < 1 {
		t.Fatalf("key_not_authorized = %v after a refused key", got)
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
