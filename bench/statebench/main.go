package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"go.uber.org/zap"
	gossh "golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

var (
	picks  = flag.Int("picks", 10000, "picks per case")
	logins = flag.Int("logins", 500, "SSH logins per gateway")
	nodes  = flag.Int("nodes", 8, "nodes in the pool")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "statebench:", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "statebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	url, stop, err := startRedis(dir)
	if err != nil {
		return err
	}
	defer stop()

	fmt.Printf("## Shared state: in memory vs Redis\n\n")
	fmt.Printf("`go run ./bench/statebench -picks %d -logins %d -nodes %d`, redis-server on loopback, %s.\n\n", *picks, *logins, *nodes, time.Now().Format("2006-01-02"))
	if err := pickLatency(url); err != nil {
		return err
	}
	return loginLatency(dir, url)
}

// startRedis runs redis-server on a free loopback port.
func startRedis(dir string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting redis-server (apt-get install redis-server): %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("redis-server did not listen")
		}
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", port), stop, nil
}

type stats struct{ p50, p99 time.Duration }

func summarize(d []time.Duration) stats {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return stats{p50: d[len(d)/2], p99: d[len(d)*99/100]}
}

func newBalancer(url string, prefix string) (*balancer.Balancer, func(), error) {
	var opts balancer.Options
	var store *redisstate.Store
	if url != "" {
		var err error
		if store, err = redisstate.New(redisstate.Config{Redis: url, Replica: "bench", Prefix: prefix}); err != nil {
			return nil, nil, err
		}
		opts.Shared = store
	}
	b := balancer.New(balancer.Config{}, opts)
	var set []balancer.Node
	for i := 0; i < *nodes; i++ {
		set = append(set, balancer.Node{Name: fmt.Sprintf("node-%d", i), SSH: fmt.Sprintf("10.0.0.%d:22", i+4)})
	}
	b.SetNodes(set)
	for _, n := range set {
		b.SetHealth(n.Name, balancer.SSH, true, "ok")
	}
	if store == nil {
		return b, func() {}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.RunShared(ctx) }()
	return b, func() { cancel(); <-done; store.Close() }, nil
}

// pickLatency times Acquire for new users (each a first pick) and for a
// pinned user (who holds a session), in memory and with Redis, the two
// interleaved pick by pick.
func pickLatency(url string) error {
	mem, stopMem, _ := newBalancer("", "")
	defer stopMem()
	red, stopRed, err := newBalancer(url, "{bench}:")
	if err != nil {
		return err
	}
	defer stopRed()
	type result struct{ memNew, redNew, memPin, redPin stats }
	var r result
	timeAcquire := func(b *balancer.Balancer, user string) (time.Duration, error) {
		start := time.Now()
		l, err := b.Acquire(user, balancer.SSH, "bench")
		d := time.Since(start)
		if err != nil {
			return 0, err
		}
		l.Release()
		return d, nil
	}
	for _, pinned := range []bool{false, true} {
		var dm, dr []time.Duration
		var holdM, holdR *balancer.Lease
		if pinned {
			holdM, _ = mem.Acquire("pinned", balancer.SSH, "bench")
			holdR, _ = red.Acquire("pinned", balancer.SSH, "bench")
		}
		for i := 0; i < *picks; i++ {
			user := fmt.Sprintf("user%d", i)
			if pinned {
				user = "pinned"
			}
			m, err := timeAcquire(mem, user)
			if err != nil {
				return err
			}
			rd, err := timeAcquire(red, user)
			if err != nil {
				return err
			}
			dm, dr = append(dm, m), append(dr, rd)
		}
		if pinned {
			holdM.Release()
			holdR.Release()
			r.memPin, r.redPin = summarize(dm), summarize(dr)
		} else {
			r.memNew, r.redNew = summarize(dm), summarize(dr)
		}
	}
	if _, degraded, _ := red.SharedStatus(); degraded {
		return fmt.Errorf("the Redis balancer fell back to its own view during the run")
	}
	fmt.Printf("### Pick latency (Acquire), %d picks each, %d nodes\n\n", *picks, *nodes)
	fmt.Println("| user | in memory p50 | p99 | Redis p50 | p99 | added at p99 |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	fmt.Printf("| new | %s | %s | %s | %s | %s |\n", us(r.memNew.p50), us(r.memNew.p99), us(r.redNew.p50), us(r.redNew.p99), us(r.redNew.p99-r.memNew.p99))
	fmt.Printf("| pinned | %s | %s | %s | %s | %s |\n\n", us(r.memPin.p50), us(r.memPin.p99), us(r.redPin.p50), us(r.redPin.p99), us(r.redPin.p99-r.memPin.p99))
	return nil
}

func us(d time.Duration) string  { return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3) }
func msf(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6) }

// loginLatency times SSH logins (TCP connect to authenticated) through two
// gateways in front of the same in-process nodes, one keeping state in
// memory and one in Redis, alternating login by login.
func loginLatency(dir, url string) error {
	keysDir := filepath.Join(dir, "state")
	keys, err := sshgw.LoadKeys(keysDir)
	if err != nil {
		return err
	}
	var static []discovery.StaticNode
	for i := 0; i < 3; i++ {
		hk, err := sshgw.LoadOrCreateKey(filepath.Join(dir, fmt.Sprintf("node%d_key", i)), "node")
		if err != nil {
			return err
		}
		n, err := app.StartDemoNode(fmt.Sprintf("node-%d", i+1), "127.0.0.1:0", hk, keys.CA.PublicKey(), "")
		if err != nil {
			return err
		}
		defer n.Close()
		static = append(static, discovery.StaticNode{Name: fmt.Sprintf("node-%d", i+1), SSH: n.Addr()})
	}
	userKey, err := sshgw.LoadOrCreateKey(filepath.Join(dir, "user_key"), "bench")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "authkeys"), 0o755); err != nil {
		return err
	}
	authorized := gossh.MarshalAuthorizedKey(userKey.PublicKey())
	for i := -1; i < *logins; i++ {
		name := "bench"
		if i >= 0 {
			name = fmt.Sprintf("new%d", i)
		}
		if err := os.WriteFile(filepath.Join(dir, "authkeys", name), authorized, 0o644); err != nil {
			return err
		}
	}
	start := func(redis string) (*app.Gateway, func(), error) {
		cfg := app.Config{StateDir: keysDir, ShutdownTimeout: time.Second}
		cfg.SSH.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.SSH.AuthorizedKeys = sshgw.KeysTemplate(filepath.Join(dir, "authkeys", "{user}"))
		cfg.Health = discovery.HealthConfig{Interval: 200 * time.Millisecond, Rise: 1}
		cfg.Discovery.Static = static
		cfg.State.Redis = redis
		cfg.State.Prefix = "{benchgw}:"
		g, err := app.New(cfg, zap.NewNop())
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			up := 0
			for _, n := range g.Balancer().Nodes() {
				if n.State == balancer.StateUp {
					up++
				}
			}
			if up == 3 {
				break
			}
			if time.Now().After(deadline) {
				cancel()
				return nil, nil, fmt.Errorf("nodes not up")
			}
		}
		return g, func() { cancel(); <-done }, nil
	}
	memGW, stopMem, err := start("")
	if err != nil {
		return err
	}
	defer stopMem()
	redGW, stopRed, err := start(url)
	if err != nil {
		return err
	}
	defer stopRed()
	login := func(addr, user string) (time.Duration, error) {
		cc := &gossh.ClientConfig{User: user, Auth: []gossh.AuthMethod{gossh.PublicKeys(userKey)}, HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
		start := time.Now()
		c, err := gossh.Dial("tcp", addr, cc)
		d := time.Since(start)
		if err != nil {
			return 0, err
		}
		c.Close()
		return d, nil
	}
	fmt.Printf("### SSH connection setup through a gateway, %d logins each\n\n", *logins)
	fmt.Println("Go SSH client, key login, TCP connect to authenticated (the gateway logs in to the node meanwhile), the two gateways alternating. A new user's login is decided over a snapshot read from Redis under WATCH and written with MULTI/EXEC (three round trips, again on a conflict); a returning user's pin comes from the gateway's copy of the pin table.")
	fmt.Println()
	fmt.Println("| user | in memory p50 | p99 | Redis p50 | p99 | added at p99 |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, pinned := range []bool{false, true} {
		var dm, dr []time.Duration
		for i := 0; i < *logins; i++ {
			user := fmt.Sprintf("new%d", i)
			if pinned {
				user = "bench"
			}
			m, err := login(memGW.SSHAddr(), user)
			if err != nil {
				return err
			}
			r, err := login(redGW.SSHAddr(), user)
			if err != nil {
				return err
			}
			dm, dr = append(dm, m), append(dr, r)
		}
		m, r := summarize(dm), summarize(dr)
		label := "new"
		if pinned {
			label = "returning (pinned)"
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", label, msf(m.p50), msf(m.p99), msf(r.p50), msf(r.p99), msf(r.p99-m.p99))
	}
	fmt.Println()
	if _, degraded, _ := redGW.Balancer().SharedStatus(); degraded {
		return fmt.Errorf("the Redis gateway fell back to its own view during the run")
	}
	return nil
}
