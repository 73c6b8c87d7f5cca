package app

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/rdpgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

func TestRDPSectionParses(t *testing.T) {
	doc := "rdp:\n  listen: 0.0.0.0:3389\n  idle_timeout: 8h\ndiscovery:\n  static:\n    - {name: w1, ssh: '10.0.0.4:22', rdp: '10.0.0.4:3389'}\n"
	cfg, err := ParseConfig("p.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.RDP.Enabled() || cfg.RDP.IdleTimeout != 8*time.Hour || cfg.RDP.ProofTime != 3*time.Second || cfg.Discovery.Static[0].RDP != "10.0.0.4:3389" {
		t.Fatalf("parsed %+v", cfg.RDP)
	}
	if cfg, _ := ParseConfig("p.yaml", []byte(minimal)); cfg.RDP.Enabled() {
		t.Fatal("rdp is on by default")
	}
	for doc, want := range map[string]string{
		"rdp:\n  proof_bytes: -1\n" + minimal:                             "p.yaml:2: rdp.proof_bytes: must not be negative",
		"rdp:\n  lisen: x\n" + minimal:                                    "p.yaml:2: rdp.lisen: unknown key",
		"discovery:\n  static:\n    - {name: n, ssh: 'h:22', rdp: 'h'}\n": "discovery.static[0].rdp:",
	} {
		if _, err := ParseConfig("p.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}
}

func TestGatewayServesRDP(t *testing.T) {
	sshNode := testutil.ServeLine(t, "127.0.0.1:0", "SSH-2.0-node\r\n")
	// An RDP node: it confirms the Connection Request, then answers each
	// client write with a screenful.
	rdpNode := testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		if _, err := rdpgw.ReadConnectionRequest(c, 1024); err != nil {
			return
		}
		_, _ = c.Write([]byte("\x03\x00\x00\x0b\x06\xd0\x00\x00\x12\x34\x00"))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			if _, err := c.Write(make([]byte, 20000)); err != nil {
				return
			}
		}
	})
	cfg := Config{StateDir: filepath.Join(t.TempDir(), "state"), ShutdownTimeout: time.Second}
	cfg.SSH.Listen, cfg.Admin.Listen, cfg.RDP.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.RDP.ProofTime = 10 * time.Millisecond
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "w1", SSH: sshNode, RDP: rdpNode}}
	cfg.Health = discovery.HealthConfig{Interval: 50 * time.Millisecond, Rise: 1}
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testutil.Eventually(t, 5*time.Second, "w1's RDP up", func() bool {
		st := g.Balancer().Nodes()
		return len(st) == 1 && st[0].Check(balancer.RDP).Up
	})
	c, err := net.Dial("tcp", g.RDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(rdpgw.BuildConnectionRequest("Cookie: mstshash=alice", 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 11)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "alice's RDP session counted", func() bool {
		_, _ = c.Write([]byte{1})
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, _ = io.Copy(io.Discard, c)
		st := g.Balancer().Nodes()[0]
		return st.Sessions.Of(balancer.RDP) == 1
	})
	if s := g.Balancer().Sessions(); len(s) != 1 || s[0].Protocol != balancer.RDP {
		t.Fatalf("sessions %+v", s)
	}
}
