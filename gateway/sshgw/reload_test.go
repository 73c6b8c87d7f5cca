package sshgw

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestSetConfigForNewConnections: a reload's limit holds for the
// connections that come after it; the open one goes on, and a setting
// made at start is reported as needing a restart.
func TestSetConfigForNewConnections(t *testing.T) {
	g := newTestGW(t, nil)
	held := dialAs(t, g.addr, "alice", g.userKey)
	defer held.Close()
	cfg := *g.srv.live.Load()
	cfg.MaxSessionsPerUser = 1
	cfg.MaxUnauthenticated = cfg.MaxUnauthenticated + 1
	restart, err := g.srv.SetConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) != 1 || restart[0] != "max_unauthenticated" {
		t.Fatalf("needs restart %q, want max_unauthenticated", restart)
	}
	var banner strings.Builder
	_, err = ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
		User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
		BannerCallback: func(m string) error { banner.WriteString(m); return nil },
	})
	if err == nil || !strings.Contains(banner.String(), "you already have 1 connections open") {
		t.Fatalf("alice's second connection after the reload: %v, %q", err, banner.String())
	}
	if _, _, err := held.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Fatalf("the open connection did not survive the reload: %v", err)
	}
	bad := cfg
	bad.MaxAuthTries = -1
	if _, err := g.srv.SetConfig(bad); err == nil {
		t.Fatal("a bad setting was taken")
	}
	if g.srv.live.Load().MaxAuthTries == -1 {
		t.Fatal("a refused SetConfig changed the settings")
	}
}
