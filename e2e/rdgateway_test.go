package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/rdg"
	"github.com/poolgate/poolgate/gateway/sshgw"
	"github.com/poolgate/poolgate/internal/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// rdgPool is rdpPool with the RD Gateway on the HTTP front end and plain
// RDP off, as deploy/ sets it up.
func rdgPool(t *testing.T, extra func(*app.Config)) (*pool, []*xrdpNode) {
	t.Helper()
	return rdpPool(t, func(c *app.Config) {
		c.RDP.Listen = ""
		c.HTTP.Listen = "127.0.0.1:0"
		c.RDP.Gateway.Enabled = true
		c.RDP.Gateway.Address = "127.0.0.1" // replaced by the bound port below
		if extra != nil {
			extra(c)
		}
	})
}

// rdpFile asks the admin API for user's .rdp file, as poolgate rdp-file
// does.
func rdpFileOf(t *testing.T, p *pool, user, node string) []byte {
	t.Helper()
	body := "{}"
	if node != "" {
		body = `{"node":"` + node + `"}`
	}
	req, _ := http.NewRequest("POST", "http://"+p.gw.AdminAddr()+"/api/users/"+user+"/rdp-file", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-rdp" {
		t.Fatalf("rdp-file for %s: %s %s", user, resp.Status, b.String())
	}
	return b.Bytes()
}

// rdpFields parses an .rdp file's lines (key:type:value, CRLF).
func rdpFields(t *testing.T, f []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(string(f), "\r\n") {
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || (parts[1] != "s" && parts[1] != "i") {
			t.Fatalf(".rdp line %q is not key:type:value", line)
		}
		out[parts[0]] = parts[1] + ":" + parts[2]
	}
	return out
}

// rdgClient runs xfreerdp through the RD Gateway. args are xfreerdp's
// (the target, the token, the transport); it waits for the end when
// short, else returns with it running at xrdp's login screen.
type rdgRun struct {
	out  testutil.SyncBuffer
	done chan struct{}
	stop func()
}

func xfreerdpGW(t *testing.T, short bool, args ...string) *rdgRun {
	t.Helper()
	args = append([]string{"-a", "stdbuf", "-oL", "-eL", "xfreerdp"}, args...)
	args = append(args, "/cert:ignore", "/sec:tls")
	if short {
		args = append(args, "+auth-only", "/p:x")
	}
	cmd := exec.Command("xvfb-run", args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r := &rdgRun{done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &r.out, &r.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(r.done) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-r.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-r.done
			}
		})
	}
	t.Cleanup(r.stop)
	if short {
		select {
		case <-r.done:
		case <-time.After(40 * time.Second):
			t.Fatalf("xfreerdp %v did not finish: %s", args, r.out.String())
		}
	}
	return r
}

// tokenOf is the gatewayaccesstoken of an .rdp file.
func tokenOf(t *testing.T, f []byte) string {
	t.Helper()
	v := rdpFields(t, f)["gatewayaccesstoken"]
	if !strings.HasPrefix(v, "s:") || len(v) < 20 {
		t.Fatalf("no token in %q", f)
	}
	return strings.TrimPrefix(v, "s:")
}

func rdpSessionsOf(p *pool, user string) (n int, nodes []string) {
	for _, s := range p.gw.Balancer().Sessions() {
		if s.User == user && s.Protocol == balancer.RDP {
			n++
			nodes = append(nodes, s.Node)
		}
	}
	return n, nodes
}

func TestRDGatewayWithFreeRDP(t *testing.T) {
	p, xs := rdgPool(t, nil)
	gwAddr := p.gw.HTTPAddr()
	// alice works on node X over SSH.
	h := p.hold("alice")

	// Her .rdp file, field by field against Microsoft's documented
	// settings ("Supported RDP properties").
	f := rdpFileOf(t, p, "alice", "")
	fields := rdpFields(t, f)
	want := map[string]string{
		"full address": "s:pool", "gatewayhostname": "s:127.0.0.1", "gatewayusagemethod": "i:1",
		"gatewayprofileusagemethod": "i:1", "gatewaycredentialssource": "i:5", "username": "s:alice",
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf(".rdp %s = %q, want %q", k, fields[k], v)
		}
	}
	tok := tokenOf(t, f)
	var expired string
	defer func() {
		if strings.Contains(p.logText(), tok) || strings.Contains(p.logText(), expired) {
			t.Error("a token is in the gateway's log")
		}
	}()

	// Both transports; /u:bob with alice's token still lands on her node
	// and counts as alice.
	for _, transport := range []string{"http", "http,no-websockets"} {
		before := tlsCounts(xs)
		r := xfreerdpGW(t, false, "/v:pool", "/g:"+gwAddr, "/gt:"+transport, "/gat:"+tok, "/u:bob")
		got := landed(t, xs, before)
		if xs[got].name != h.node {
			t.Fatalf("/gt:%s: alice's token reached %s, her SSH session is on %s\n%s", transport, xs[got].name, h.node, r.out.String())
		}
		p.waitFor("the RD Gateway session counted as alice on "+h.node, func() bool {
			n, nodes := rdpSessionsOf(p, "alice")
			return n == 1 && nodes[0] == h.node
		})
		if n, _ := rdpSessionsOf(p, "bob"); n != 0 {
			t.Fatalf("/u:bob counted %d RDP sessions for bob", n)
		}
		r.stop()
		p.waitFor("alice's RD Gateway session released", func() bool { n, _ := rdpSessionsOf(p, "alice"); return n == 0 })
	}

	started := p.gw.Balancer().Started(balancer.RDP)
	refused := func(what, wantErr string, args ...string) {
		t.Helper()
		before := tlsCounts(xs)
		r := xfreerdpGW(t, true, args...)
		if !strings.Contains(r.out.String(), wantErr) {
			t.Fatalf("%s: xfreerdp said\n%s\nwant %s", what, r.out.String(), wantErr)
		}
		if got := p.gw.Balancer().Started(balancer.RDP); got != started {
			t.Fatalf("%s counted %d RDP sessions", what, got-started)
		}
		for i, x := range xs {
			if x.tlsDone() != before[i] {
				t.Fatalf("%s reached %s", what, x.name)
			}
		}
	}
	// A forged token, an expired one, and a channel to another host.
	refused("a forged token", "E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED", "/v:pool", "/g:"+gwAddr, "/gt:http", "/gat:pg1.eyJ1IjoiYWxpY2UifQ.AAAA")
	key, err := os.ReadFile(filepath.Join(p.dir, "state", "rdg_token_key"))
	if err != nil {
		t.Fatal(err)
	}
	old := &rdg.Signer{Key: key, Now: func() time.Time { return time.Now().Add(-time.Hour) }}
	expired, _, err = old.Issue("alice", "", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	refused("an expired token", "E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED", "/v:pool", "/g:"+gwAddr, "/gt:http", "/gat:"+expired)
	refused("a channel to another host", "E_PROXY_RAP_ACCESSDENIED", "/v:127.0.0.1:22", "/g:"+gwAddr, "/gt:http", "/gat:"+tok)
	refused("a channel to another node", "E_PROXY_RAP_ACCESSDENIED", "/v:"+otherNode(xs, h.node), "/g:"+gwAddr, "/gt:http,no-websockets", "/gat:"+tok)
	if !strings.Contains(p.logText(), "rd gateway tunnel refused") {
		t.Fatal("refusals are not logged")
	}

	// The file itself opens with xfreerdp (the gateway's port added, as
	// rdp.gateway.address names it in a real pool).
	path := filepath.Join(t.TempDir(), "alice.rdp")
	withPort := bytes.Replace(f, []byte("gatewayhostname:s:127.0.0.1\r\n"), []byte("gatewayhostname:s:"+gwAddr+"\r\n"), 1)
	if err := os.WriteFile(path, withPort, 0o600); err != nil {
		t.Fatal(err)
	}
	before := tlsCounts(xs)
	xfreerdpGW(t, true, path)
	if got := landed(t, xs, before); xs[got].name != h.node {
		t.Fatalf("alice.rdp reached %s, her node is %s", xs[got].name, h.node)
	}
}

func otherNode(xs []*xrdpNode, not string) string {
	for _, x := range xs {
		if x.name != not {
			return x.name
		}
	}
	return ""
}

// TestRDGatewaysShareTokens: two gateways sharing Redis: a token one
// signed opens the user's node through the other.
func TestRDGatewaysShareTokens(t *testing.T) {
	srv := redistest.Start(t)
	p, xs := rdgPool(t, func(c *app.Config) {
		c.State.Redis = srv.URL()
		c.State.Replica = "gw-a"
	})
	h := p.hold("alice")
	tok := tokenOf(t, rdpFileOf(t, p, "alice", ""))

	// Gateway B: its own state_dir, the same nodes and Redis.
	cfg := app.Config{StateDir: filepath.Join(t.TempDir(), "state"), ShutdownTimeout: 5 * time.Second}
	cfg.SSH.Listen, cfg.Admin.Listen, cfg.HTTP.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.SSH.AuthorizedKeys = sshgw.KeysTemplate(filepath.Join(p.dir, "keys", "{user}", "authorized_keys"))
	cfg.Health = discovery.HealthConfig{Interval: 200 * time.Millisecond, Rise: 1, Fall: 2}
	cfg.Balancer.AffinityGrace = 30 * time.Minute
	cfg.State.Redis, cfg.State.Replica = srv.URL(), "gw-b"
	cfg.RDP.Gateway.Enabled = true
	for _, n := range p.gw.Balancer().Nodes() {
		cfg.Discovery.Static = append(cfg.Discovery.Static, discovery.StaticNode{Name: n.Name, SSH: n.SSH, RDP: n.RDP})
	}
	b, err := app.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 15*time.Second, "gateway B sees every node's RDP up", func() bool {
		for _, st := range b.Balancer().Nodes() {
			if !st.Check(balancer.RDP).Up {
				return false
			}
		}
		return true
	})

	before := tlsCounts(xs)
	r := xfreerdpGW(t, false, "/v:pool", "/g:"+b.HTTPAddr(), "/gt:http", "/gat:"+tok)
	if got := landed(t, xs, before); xs[got].name != h.node {
		t.Fatalf("alice's token from gateway A through gateway B reached %s, her node is %s\n%s", xs[got].name, h.node, r.out.String())
	}
	testutil.Eventually(t, 15*time.Second, "gateway A to count alice's RDP session through B", func() bool {
		n, nodes := rdpSessionsOf(p, "alice")
		return n == 1 && nodes[0] == h.node
	})
	r.stop()
}
