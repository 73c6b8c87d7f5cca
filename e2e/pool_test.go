package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/sshgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// pool is a gateway in front of real sshd nodes, with a client key and
// users ready.
type pool struct {
	t       *testing.T
	dir     string
	entry   string // where clients connect: the gateway, or its middlebox
	gw      *app.Gateway
	nodes   []*node
	key     string // client private key, authorized for every test user
	cancel  context.CancelFunc
	done    chan error
	stopped bool
	hubs    []*hub               // when poolOptions.hubs
	logs    *testutil.SyncBuffer // the gateway's log, JSON lines
}

// logText is the gateway's log so far.
func (p *pool) logText() string { return p.logs.String() }

type poolOptions struct {
	nodes int // default 3
	// nodeBoxes puts a middlebox between the gateway and each node, dropping
	// connections idle for nodeIdle (0: never); clientIdle > 0 puts one
	// before the gateway.
	nodeBoxes  bool
	nodeIdle   time.Duration
	clientIdle time.Duration
	cfg        func(*app.Config)
	extraNodes []discovery.StaticNode // nodes in the config with no sshd
	// hubs starts a JupyterHub beside each sshd and turns on the HTTP
	// gateway (TLS, self-signed) in front of them.
	hubs bool
	// appOpts are passed to app.New (e.g. the Azure fakes).
	appOpts []app.Option
	// waitUp is how many nodes must be up before the test starts: 0 means
	// every started node, -1 none.
	waitUp int
}

var testUsers = []string{"alice", "bob", "carol", "dave", "erin", "frank"}

func newPool(t *testing.T, opts poolOptions) *pool {
	t.Helper()
	requirePeers(t, sshdPath, "ssh", "scp", "ssh-keygen", "sshpass", "useradd", "chpasswd")
	if opts.nodes == 0 {
		opts.nodes = 3
	}
	p := &pool{t: t, dir: t.TempDir()}
	for _, u := range testUsers {
		ensureUser(t, u, "")
	}
	ensureUser(t, "pat", "pat-secret-1")

	stateDir := filepath.Join(p.dir, "state")
	keys, err := sshgw.LoadKeys(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(p.dir, "user_ca.pub")
	if err := os.WriteFile(caFile, []byte(sshgw.AuthorizedCALine(keys.CA)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.key = filepath.Join(p.dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", p.key)
	pub, _ := os.ReadFile(p.key + ".pub")
	for _, u := range append(testUsers, "ghost") { // ghost: a key at the gateway, no account on the nodes
		dir := filepath.Join(p.dir, "keys", u)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { reapOrphans(t) }) // runs last: after the gateway and nodes stopped

	var static []discovery.StaticNode
	for i := 0; i < opts.nodes; i++ {
		n := startNode(t, fmt.Sprintf("node-%d", i+1), fmt.Sprintf("127.0.0.%d", i+2), caFile)
		if opts.nodeBoxes {
			n.box = newMiddlebox(t, fmt.Sprintf("127.0.0.%d:2223", i+2), n.addr, opts.nodeIdle)
			n.gwAddr = n.box.addr()
		}
		p.nodes = append(p.nodes, n)
		static = append(static, discovery.StaticNode{Name: n.name, SSH: n.gwAddr})
	}
	if opts.hubs {
		requirePeers(t, "jupyterhub")
		p.hubs = startHubs(t, p.nodes, testUsers)
		for i, h := range p.hubs {
			static[i].HTTP = h.addr
		}
	}
	static = append(static, opts.extraNodes...)

	cfg := app.Config{StateDir: stateDir, ShutdownTimeout: 5 * time.Second}
	cfg.SSH.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.SSH.AuthorizedKeys = sshgw.KeysTemplate(filepath.Join(p.dir, "keys", "{user}", "authorized_keys"))
	cfg.SSH.PasswordPassthrough = true
	cfg.Health = discovery.HealthConfig{Interval: 200 * time.Millisecond, Rise: 1, Fall: 2}
	cfg.Balancer.AffinityGrace = 30 * time.Minute
	cfg.Discovery.Static = static
	if opts.hubs {
		cfg.HTTP.Listen = "127.0.0.1:0"
		no := false
		cfg.HTTP.UpstreamTLS = &no
	}
	if opts.cfg != nil {
		opts.cfg(&cfg)
	}
	p.logs = &testutil.SyncBuffer{}
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel), zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(p.logs), zap.InfoLevel))
	})))
	gw, err := app.New(cfg, log, opts.appOpts...)
	if err != nil {
		t.Fatal(err)
	}
	p.gw = gw
	p.entry = gw.SSHAddr()
	if opts.clientIdle > 0 {
		p.entry = newMiddlebox(t, "127.0.0.1:0", gw.SSHAddr(), opts.clientIdle).addr()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done = make(chan error, 1)
	go func() { p.done <- gw.Run(ctx) }()
	t.Cleanup(p.stop)
	// Wait for the first health results.
	wantUp := opts.waitUp
	if wantUp == 0 {
		wantUp = len(p.nodes)
	}
	p.waitFor(fmt.Sprintf("%d nodes up", max(wantUp, 0)), func() bool {
		up := 0
		for _, st := range gw.Balancer().Nodes() {
			if st.State == balancer.StateUp {
				up++
			}
		}
		return wantUp < 0 || up == wantUp
	})
	if opts.hubs {
		p.waitFor("all hubs up", func() bool {
			up := 0
			for _, st := range gw.Balancer().Nodes() {
				if st.Check(balancer.HTTP).Up {
					up++
				}
			}
			return up == len(p.hubs)
		})
	}
	return p
}

func (p *pool) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	p.cancel()
	if err := <-p.done; err != nil {
		p.t.Errorf("gateway Run: %v", err)
	}
}

// waitFor polls cond for up to 15 s.
func (p *pool) waitFor(what string, cond func() bool) {
	p.t.Helper()
	ok := false
	defer func() {
		if !ok {
			p.t.Logf("nodes: %+v", p.gw.Balancer().Nodes())
		}
	}()
	testutil.Eventually(p.t, 15*time.Second, what, cond)
	ok = true
}

// sessionsOf counts the user's live sessions in the gateway.
func (p *pool) sessionsOf(user string) int {
	n := 0
	for _, s := range p.gw.Balancer().Sessions() {
		if s.User == user {
			n++
		}
	}
	return n
}

func (p *pool) node(name string) *node {
	for _, n := range p.nodes {
		if n.name == name {
			return n
		}
	}
	p.t.Fatalf("no node %s", name)
	return nil
}
