package sshgw

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/testutil"
)

// passwordLogin tries user with password through the gateway, returning
// the client (nil on failure), the banner lines and the error.
func passwordLogin(addr, user, password string) (*ssh.Client, string, error) {
	var banner testutil.SyncBuffer
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.Password(password)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
		BannerCallback: func(m string) error { _, _ = banner.Write([]byte(m)); return nil },
	})
	return c, banner.String(), err
}

// TestPasswordGuessTakesNothing: while the node checks a password the
// user does not count anywhere (no lease, no pin), a wrong one leaves
// nothing behind, and a right one is counted once the node said yes.
func TestPasswordGuessTakesNothing(t *testing.T) {
	gate, arrived := make(chan struct{}), make(chan struct{}, 1)
	g := newTestGW(t, func(c *Config) { c.PasswordPassthrough = true }, func(ca ssh.PublicKey) string { return gatedNode(t, ca, gate, arrived) })
	done := make(chan error, 1)
	go func() { _, _, err := passwordLogin(g.addr, "alice", "a guess"); done <- err }()
	<-arrived // the gateway is logging in to the node, held at the gate
	if n := g.bal.UserSessions("alice"); n != 0 {
		t.Fatalf("a password not yet checked counts %d session(s) for alice", n)
	}
	if st := g.bal.Nodes()[0]; st.Sessions.Of(balancer.SSH) != 0 || st.Pinned != 0 {
		t.Fatalf("a password not yet checked shows on the node: %d sessions, %d pinned", st.Sessions.Of(balancer.SSH), st.Pinned)
	}
	close(gate)
	if err := <-done; err == nil {
		t.Fatal("a wrong password logged in")
	}
	if st := g.bal.Nodes()[0]; st.Sessions.Of(balancer.SSH) != 0 || st.Pinned != 0 || len(g.bal.Sessions()) != 0 {
		t.Fatalf("a wrong password left %d sessions, %d pins", st.Sessions.Of(balancer.SSH), st.Pinned)
	}
	c, _, err := passwordLogin(g.addr, "alice", testPassword)
	if err != nil {
		t.Fatalf("the right password: %v", err)
	}
	defer c.Close()
	if n := g.bal.UserSessions("alice"); n != 1 {
		t.Fatalf("alice, logged in by password, counts %d sessions", n)
	}
}

// TestPasswordGuessLearnsNothing: with max_sessions_per_user reached for
// alice, a wrong password for her gets the same answer as one for a user
// who does not exist; the right one is told of the limit.
func TestPasswordGuessLearnsNothing(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.PasswordPassthrough = true; c.MaxSessionsPerUser = 1 })
	held := dialAs(t, g.addr, "alice", g.userKey)
	defer held.Close()
	_, forAlice, errA := passwordLogin(g.addr, "alice", "a guess")
	_, forNobody, errN := passwordLogin(g.addr, "nobody", "a guess")
	if errA == nil || errN == nil {
		t.Fatal("a wrong password logged in")
	}
	if forAlice != forNobody || strings.Contains(forAlice, "connections open") {
		t.Fatalf("a guess tells alice from nobody: banners %q vs %q", forAlice, forNobody)
	}
	_, banner, err := passwordLogin(g.addr, "alice", testPassword)
	if err == nil || !strings.Contains(banner, "you already have 1 connections open") {
		t.Fatalf("alice's right password at her limit: %v, banner %q", err, banner)
	}
}
