package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/sshgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// replicaProc is one 'poolgate serve' process of a pool of gateways that
// share their routing state through Redis.
type replicaProc struct {
	t                *testing.T
	name             string
	sshAddr, admAddr string
	cmd              *exec.Cmd
	exited           chan error
	logs             testutil.SyncBuffer
}

// sharedPool is two or more gateways, real sshd nodes, and a client key.
type sharedPool struct {
	t        *testing.T
	dir, bin string
	key      string
	redis    *redistest.Server
	replicas map[string]*replicaProc
}

const sharedTTL = 3 * time.Second

func newSharedPool(t *testing.T, users []string) *sharedPool {
	t.Helper()
	requirePeers(t, sshdPath, "ssh", "ssh-keygen", "useradd")
	for _, u := range users {
		ensureUser(t, u, "")
	}
	t.Cleanup(func() { reapOrphans(t) })
	sp := &sharedPool{t: t, dir: t.TempDir(), bin: buildPoolgate(t), redis: redistest.Start(t), replicas: map[string]*replicaProc{}}
	// One set of keys, copied into each gateway's state_dir: users see one
	// host key, nodes trust one CA.
	keys, err := sshgw.LoadKeys(filepath.Join(sp.dir, "keys-master"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(sp.dir, "user_ca.pub")
	if err := os.WriteFile(caFile, []byte(sshgw.AuthorizedCALine(keys.CA)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sp.key = filepath.Join(sp.dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", sp.key)
	pub, _ := os.ReadFile(sp.key + ".pub")
	for _, u := range users {
		_ = os.MkdirAll(filepath.Join(sp.dir, "authkeys", u), 0o755)
		_ = os.WriteFile(filepath.Join(sp.dir, "authkeys", u, "authorized_keys"), pub, 0o644)
	}
	for i := 1; i <= 3; i++ {
		startNode(t, fmt.Sprintf("node-%d", i), fmt.Sprintf("127.0.0.%d", i+1), caFile)
	}
	return sp
}

// start runs a gateway named name.
func (sp *sharedPool) start(name string) *replicaProc {
	t := sp.t
	t.Helper()
	state := filepath.Join(sp.dir, "state-"+name)
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{sshgw.HostKeyFile, sshgw.UserCAFile} {
		data, err := os.ReadFile(filepath.Join(sp.dir, "keys-master", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := &replicaProc{t: t, name: name, sshAddr: freePort(t), admAddr: freePort(t), exited: make(chan error, 1)}
	conf := filepath.Join(sp.dir, name+".yaml")
	yaml := fmt.Sprintf(`state_dir: %s
shutdown_timeout: 2s
ssh:
  listen: %s
  authorized_keys: %s/authkeys/{user}/authorized_keys
admin:
  listen: %s
health:
  interval: 200ms
  rise: 1
  fall: 2
state:
  redis: %s
  lease_ttl: %s
  replica: %s
discovery:
  static:
    - {name: node-1, ssh: 127.0.0.2:2222}
    - {name: node-2, ssh: 127.0.0.3:2222}
    - {name: node-3, ssh: 127.0.0.4:2222}
`, state, r.sshAddr, sp.dir, r.admAddr, sp.redis.URL(), sharedTTL, name)
	if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(sp.bin, "serve", "--config", conf, "--log-format", "console")
	r.cmd.Stdout, r.cmd.Stderr = &r.logs, &r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, tailN(r.logs.String(), 40))
		}
	})
	testutil.Eventually(t, 15*time.Second, "gateway "+name+" to see 3 nodes up", func() bool {
		up := 0
		for _, n := range r.nodes() {
			if n.State == "up" {
				up++
			}
		}
		return up == 3
	})
	sp.replicas[name] = r
	return r
}

func (r *replicaProc) kill(sig syscall.Signal) {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

// nodes reads the gateway's /api/nodes (nil while it does not answer).
func (r *replicaProc) nodes() []admin.NodeJSON { return r.answer().Nodes }

func (r *replicaProc) answer() admin.NodesJSON {
	var a admin.NodesJSON
	c, err := net.DialTimeout("tcp", r.admAddr, 200*time.Millisecond)
	if err != nil {
		return a
	}
	c.Close()
	getJSON(r.t, "http://"+r.admAddr+"/api/nodes", &a)
	return a
}

// sessionsOn sums each node's sessions in the gateway's /api/nodes.
func (r *replicaProc) sessionsOn() map[string]int {
	out := map[string]int{}
	for _, n := range r.nodes() {
		out[n.Name] = n.Sessions.SSH + n.Sessions.HTTP
	}
	return out
}

func (sp *sharedPool) sshArgs(r *replicaProc) []string {
	return append(clientArgs(sp.dir, sp.key, r.sshAddr, "-p"), "-o", "BatchMode=yes")
}

// nodeOf logs in through r and returns the node it landed on.
func (sp *sharedPool) nodeOf(r *replicaProc, user string) string {
	sp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(sp.sshArgs(r), user+"@127.0.0.1", `echo "$DSVM_NODE"`)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.Output()
	if err != nil {
		sp.t.Fatalf("ssh %s through %s: %v", user, r.name, err)
	}
	return strings.TrimSpace(string(out))
}

// hold opens a session for user through r that stays open.
func (sp *sharedPool) hold(r *replicaProc, user string) *held {
	sp.t.Helper()
	h, err := startHeld(sp.t, append(sp.sshArgs(r), user+"@127.0.0.1"))
	if err != nil {
		sp.t.Errorf("session of %s through %s: %v", user, r.name, err)
	}
	return h
}

// TestGatewaysShareOneTruth is issue 7's acceptance: two gateway processes
// sharing Redis route every user alike, count each other's sessions and
// take each other's drains.
func TestGatewaysShareOneTruth(t *testing.T) {
	users := []string{"alice", "bob", "carol"}
	for i := 0; i < 10; i++ {
		users = append(users, fmt.Sprintf("racer%d", i))
	}
	sp := newSharedPool(t, users)
	a, b := sp.start("gw-a"), sp.start("gw-b")
	if st := b.answer().State; st.Backend != "redis" || st.Degraded || st.Replica != "gw-b" {
		t.Fatalf("gw-b's state: %+v", st)
	}

	// alice through A lands on X, then through B on X too.
	x := sp.nodeOf(a, "alice")
	if y := sp.nodeOf(b, "alice"); y != x {
		t.Fatalf("alice through A on %s, through B on %s", x, y)
	}

	// B counts A's sessions, and names A as their gateway.
	bob := sp.hold(a, "bob")
	testutil.Eventually(t, 5*time.Second, "B to count bob's session on "+bob.node, func() bool { return b.sessionsOn()[bob.node] == 1 })
	var sess admin.SessionsJSON
	getJSON(t, "http://"+b.admAddr+"/api/sessions", &sess)
	if len(sess.Sessions) != 1 || sess.Sessions[0].User != "bob" || sess.Sessions[0].Replica != "gw-a" {
		t.Errorf("B's /api/sessions: %+v, want bob's session held by gw-a", sess.Sessions)
	}
	if out, err := exec.Command(sp.bin, "nodes", "--admin", "http://"+b.admAddr).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "Whole pool, shared through Redis (asked gateway gw-b)") || !strings.Contains(string(out), "bob") {
		t.Errorf("poolgate nodes on B: %v\n%s", err, out)
	}
	bob.close()
	testutil.Eventually(t, 5*time.Second, "bob's session to leave B's counts", func() bool { return b.sessionsOn()[bob.node] == 0 })

	// Ten users log in at once, alternating gateways: the claims race
	// across gateways, and the spread is even. Each then opens a second
	// session through the other gateway and lands on the same node.
	var wg sync.WaitGroup
	first := make([]*held, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a
			if i%2 == 1 {
				r = b
			}
			first[i] = sp.hold(r, fmt.Sprintf("racer%d", i))
		}()
	}
	wg.Wait()
	perNode := map[string]int{}
	for i, h := range first {
		perNode[h.node]++
		other := b
		if i%2 == 1 {
			other = a
		}
		if n := sp.nodeOf(other, fmt.Sprintf("racer%d", i)); n != h.node {
			t.Errorf("racer%d on %s, and through the other gateway on %s", i, h.node, n)
		}
	}
	lo, hi := 10, 0
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		lo, hi = min(lo, perNode[n]), max(hi, perNode[n])
	}
	if hi-lo > 1 {
		t.Errorf("ten racing users spread %v: more than one apart", perNode)
	}
	testutil.Eventually(t, 5*time.Second, "both gateways to count the ten sessions", func() bool {
		sa, sb := a.sessionsOn(), b.sessionsOn()
		return sa["node-1"]+sa["node-2"]+sa["node-3"] == 10 && fmt.Sprint(sa) == fmt.Sprint(sb)
	})
	for _, h := range first {
		h.close()
	}

	// A drain through A's CLI steers a new user at B.
	out, err := exec.Command(sp.bin, "drain", x, "--admin", "http://"+a.admAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("poolgate drain %s: %v %s", x, err, out)
	}
	testutil.Eventually(t, 5*time.Second, "B to show "+x+" draining", func() bool {
		for _, n := range b.nodes() {
			if n.Name == x {
				return n.State == "draining"
			}
		}
		return false
	})
	if n := sp.nodeOf(b, "carol"); n == x {
		t.Errorf("carol, new, through B landed on %s, drained through A", n)
	}
	if n := sp.nodeOf(b, "alice"); n != x {
		t.Errorf("alice, pinned to drained %s, went to %s through B", x, n)
	}
}

// TestKilledGatewayLeavesTheCounts: SIGKILL one gateway with sessions
// open; within the lease TTL they leave the other's counts.
func TestKilledGatewayLeavesTheCounts(t *testing.T) {
	sp := newSharedPool(t, []string{"alice", "bob", "carol"})
	a, b := sp.start("gw-a"), sp.start("gw-b")
	var held []*held
	for _, u := range []string{"alice", "bob", "carol"} {
		held = append(held, sp.hold(a, u))
	}
	testutil.Eventually(t, 5*time.Second, "B to count A's three sessions", func() bool {
		s := b.sessionsOn()
		return s["node-1"]+s["node-2"]+s["node-3"] == 3
	})
	a.kill(syscall.SIGKILL)
	killed := time.Now()
	testutil.Eventually(t, 3*sharedTTL, "A's sessions to leave B's counts", func() bool {
		s := b.sessionsOn()
		return s["node-1"]+s["node-2"]+s["node-3"] == 0
	})
	if took := time.Since(killed); took > sharedTTL+time.Second {
		t.Errorf("A's sessions left B's counts %s after SIGKILL; lease_ttl is %s", took.Round(time.Millisecond), sharedTTL)
	}
	for _, h := range held {
		h.close()
	}
}

// TestRedisOutageNeverRefusesLogins: Redis stops for ten seconds while
// users log in through both gateways; every login works, and once Redis
// is back the counts converge to the truth within a lease period.
func TestRedisOutageNeverRefusesLogins(t *testing.T) {
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	sp := newSharedPool(t, users)
	a, b := sp.start("gw-a"), sp.start("gw-b")
	before := sp.hold(a, "alice")

	sp.redis.Stop()
	stopped := time.Now()
	var open []*held
	for i, u := range users[1:] {
		r := a
		if i%2 == 1 {
			r = b
		}
		start := time.Now()
		h := sp.hold(r, u)
		if h.node == "" {
			t.Fatalf("%s could not log in through %s while Redis was down", u, r.name)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s's login took %s", u, d)
		}
		open = append(open, h)
	}
	if st := a.answer().State; !st.Degraded {
		t.Errorf("A does not say it is degraded: %+v", st)
	}
	if out, _ := exec.Command(sp.bin, "nodes", "--admin", "http://"+b.admAddr).CombinedOutput(); !strings.Contains(string(out), "cannot reach the shared state") {
		t.Errorf("poolgate nodes on B while Redis is down:\n%s", out)
	}
	time.Sleep(10*time.Second - time.Since(stopped))
	sp.redis.Restart() // empty: the gateways put their sessions back
	back := time.Now()
	truth := map[string]int{before.node: 1}
	for _, h := range open {
		truth[h.node]++
	}
	for _, r := range []*replicaProc{a, b} {
		testutil.Eventually(t, 3*sharedTTL, r.name+"'s counts to converge", func() bool {
			s := r.sessionsOn()
			for _, n := range []string{"node-1", "node-2", "node-3"} {
				if s[n] != truth[n] {
					return false
				}
			}
			return !r.answer().State.Degraded
		})
	}
	if took := time.Since(back); took > sharedTTL+time.Second {
		t.Errorf("counts converged %s after Redis came back; lease_ttl is %s", took.Round(time.Millisecond), sharedTTL)
	}
	before.close()
	for _, h := range open {
		h.close()
	}
}
