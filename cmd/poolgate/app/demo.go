package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

// DemoOptions configures RunDemo.
type DemoOptions struct {
	Listen      string    // gateway address; default 127.0.0.1:2222
	AdminListen string    // admin API address; default 127.0.0.1:9090
	HTTPListen  string    // HTTP gateway address (plain HTTP); default 127.0.0.1:8000
	StateDir    string    // keys kept between runs so ssh does not warn of a changed host key
	Out         io.Writer // where the instructions go
	Nodes       int       // number of demo nodes; default 3
}

// DemoPassword is the password every demo user logs in with.
const DemoPassword = "demo"

// demoUsers get the invoking user's public keys, so key login works too.
var demoUsers = []string{"alice", "bob", "carol", "dave", "erin"}

// RunDemo runs a gateway in front of in-process demo nodes until ctx ends.
func RunDemo(ctx context.Context, opts DemoOptions, log *zap.Logger) error {
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:2222"
	}
	if opts.AdminListen == "" {
		opts.AdminListen = "127.0.0.1:9090"
	}
	if opts.HTTPListen == "" {
		opts.HTTPListen = "127.0.0.1:8000"
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.StateDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		opts.StateDir = filepath.Join(dir, "poolgate-demo")
	}
	keys, err := sshgw.LoadKeys(opts.StateDir)
	if err != nil {
		return err
	}
	keyDir := filepath.Join(opts.StateDir, "authorized_keys")
	pubKeys := ownPublicKeys()
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return err
	}
	for _, u := range demoUsers {
		if err := os.WriteFile(filepath.Join(keyDir, u), []byte(strings.Join(pubKeys, "")), 0o600); err != nil {
			return err
		}
	}

	var static []discovery.StaticNode
	var nodes []*DemoNode
	var hubs []*DemoHub
	var exporters []*DemoExporter
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
		for _, h := range hubs {
			h.Close()
		}
		for _, e := range exporters {
			e.Close()
		}
	}()
	for i := 1; i <= opts.Nodes; i++ {
		name := fmt.Sprintf("node-%d", i)
		hk, err := sshgw.LoadOrCreateKey(filepath.Join(opts.StateDir, "demo_"+name+"_host_key"), name)
		if err != nil {
			return err
		}
		n, err := StartDemoNode(name, "127.0.0.1:0", hk, keys.CA.PublicKey(), DemoPassword)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		hub, err := StartDemoHub(name, "127.0.0.1:0")
		if err != nil {
			return err
		}
		hubs = append(hubs, hub)
		ex, err := StartDemoExporter("127.0.0.1:0", 0.05*float64(i-1), 0.25+0.05*float64(i-1))
		if err != nil {
			return err
		}
		exporters = append(exporters, ex)
		static = append(static, discovery.StaticNode{Name: name, SSH: n.Addr(), HTTP: hub.Addr(), Metrics: ex.Addr()})
	}

	cfg := Config{StateDir: opts.StateDir, ShutdownTimeout: 2 * time.Second}
	cfg.SSH.Listen = opts.Listen
	cfg.Admin.Listen = opts.AdminListen
	cfg.SSH.AuthorizedKeys = sshgw.KeysTemplate(filepath.Join(keyDir, "{user}"))
	cfg.SSH.PasswordPassthrough = true
	cfg.HTTP.Listen = opts.HTTPListen
	no := false
	cfg.HTTP.TLS, cfg.HTTP.UpstreamTLS = &no, &no // a local demo: plain HTTP both sides
	cfg.HTTP.AccessLog = &no
	cfg.Health.Interval = time.Second
	cfg.Load.Interval = 2 * time.Second
	cfg.Discovery.Static = static
	gw, err := New(cfg, log)
	if err != nil {
		return err
	}
	host, port := splitHostPort(gw.SSHAddr())
	fmt.Fprintf(opts.Out, "\npoolgate demo: gateway on %s in front of %d demo nodes.\n\n", gw.SSHAddr(), len(nodes))
	fmt.Fprintf(opts.Out, "In another terminal, log in (password: %s):\n\n    ssh -p %s alice@%s\n\n", DemoPassword, port, host)
	if len(pubKeys) > 0 {
		fmt.Fprintf(opts.Out, "Your own SSH public keys also work for %s.\n", strings.Join(demoUsers, ", "))
	}
	fmt.Fprintf(opts.Out, "The demo shell tells you which node you are on (try 'hostname').\n")
	fmt.Fprintf(opts.Out, "A second terminal as alice lands on the same node; bob lands on another.\n")
	fmt.Fprintf(opts.Out, "In a browser, open http://%s/ and sign in as alice: the page names her node,\nthe same as her ssh sessions'.\n", gw.HTTPAddr())
	fmt.Fprintf(opts.Out, "See the pool: poolgate nodes --admin http://%s (or: go run ./cmd/poolgate nodes ...)\n", gw.AdminAddr())
	fmt.Fprintf(opts.Out, "Each demo node reports CPU and memory figures of a stand-in exporter (node-3 the\nbusiest); new users go where load and sessions together are lowest.\n")
	fmt.Fprintf(opts.Out, "Keys are kept in %s. Press Ctrl-C to stop.\n\n", opts.StateDir)
	return gw.Run(ctx)
}

// ownPublicKeys returns the invoking user's ~/.ssh/*.pub lines.
func ownPublicKeys() []string {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(home, ".ssh", "*.pub"))
	var out []string
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil && len(data) < 16<<10 {
			line := strings.TrimSpace(string(data))
			if line != "" && !strings.Contains(line, "\n") && !strings.Contains(line, "cert-v01") {
				out = append(out, line+"\n")
			}
		}
	}
	return out
}

func splitHostPort(addr string) (string, string) {
	i := strings.LastIndex(addr, ":")
	return strings.Trim(addr[:i], "[]"), addr[i+1:]
}
