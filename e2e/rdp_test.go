package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/rdpgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// xrdpNode is a real xrdp on 127.0.0.N:33389 with its own xrdp.ini and
// log file. No session manager runs: clients get through TLS and the
// RDP connection sequence to xrdp's own login screen.
type xrdpNode struct {
	name, addr, log string
	cmd             *exec.Cmd
	done            chan struct{}
}

func startXrdp(t *testing.T, name, ip string) *xrdpNode {
	t.Helper()
	dir := t.TempDir()
	n := &xrdpNode{name: name, addr: ip + ":33389", log: filepath.Join(dir, "xrdp.log")}
	base, err := os.ReadFile("/etc/xrdp/xrdp.ini")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(base), "\n") {
		switch {
		case l == "port=3389":
			l = "port=tcp://" + n.addr
		case strings.HasPrefix(l, "LogFile="):
			l = "LogFile=" + n.log
		case strings.HasPrefix(l, "EnableSyslog="):
			l = "EnableSyslog=false"
		case l == "fork=true":
			l = "fork=false"
		}
		lines = append(lines, l)
	}
	ini := filepath.Join(dir, "xrdp.ini")
	if err := os.WriteFile(ini, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command("xrdp", "-n", "-c", ini)
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n.cmd.Stdout, n.cmd.Stderr = io.Discard, io.Discard
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(n.stop)
	testutil.Eventually(t, 10*time.Second, name+"'s xrdp listening on "+n.addr, func() bool {
		b, _ := os.ReadFile(n.log)
		if strings.Contains(string(b), "trans_listen_address failed") {
			t.Fatalf("%s's xrdp cannot listen on %s (in use?): %s", name, n.addr, b)
		}
		return strings.Contains(string(b), "xrdp_listen_pp done")
	})
	return n
}

// stop ends xrdp (its process group: its threads and any helper).
func (n *xrdpNode) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
}

// connections counts the client connections xrdp logged.
func (n *xrdpNode) connections() int {
	b, _ := os.ReadFile(n.log)
	return strings.Count(string(b), "connection received from")
}

// tlsDone counts the connections that got through TLS.
func (n *xrdpNode) tlsDone() int {
	b, _ := os.ReadFile(n.log)
	return strings.Count(string(b), "TLS connection established")
}

// rdpPool is a pool of three nodes with sshd and xrdp each, and the RDP
// gateway on.
func rdpPool(t *testing.T, extra func(*app.Config)) (*pool, []*xrdpNode) {
	t.Helper()
	requirePeers(t, "xrdp", "xfreerdp", "xvfb-run")
	if _, err := os.Stat("/etc/xrdp/cert.pem"); err != nil {
		requirePeers(t, "/etc/xrdp/cert.pem (from the xrdp package)")
	}
	var xs []*xrdpNode
	for i := 0; i < 3; i++ {
		xs = append(xs, startXrdp(t, fmt.Sprintf("node-%d", i+1), fmt.Sprintf("127.0.0.%d", i+2)))
	}
	p := newPool(t, poolOptions{cfg: func(c *app.Config) {
		c.RDP.Listen = "127.0.0.1:0"
		c.RDP.ProofTime = time.Second
		for i := range xs {
			c.Discovery.Static[i].RDP = xs[i].addr
		}
		if extra != nil {
			extra(c)
		}
	}})
	p.waitFor("every node's RDP up", func() bool {
		for _, st := range p.gw.Balancer().Nodes() {
			if !st.Check(balancer.RDP).Up {
				return false
			}
		}
		return true
	})
	return p, xs
}

// freerdp runs xfreerdp through the gateway as user. short makes it
// +auth-only (TLS and back); otherwise it stays connected, at xrdp's
// login screen, until the returned stop is called.
func freerdp(t *testing.T, p *pool, user string, short bool) (stop func()) {
	t.Helper()
	args := []string{"-a", "xfreerdp", "/v:" + p.gw.RDPAddr(), "/u:" + user, "/cert:ignore", "/sec:tls"}
	if short {
		args = append(args, "+auth-only", "/p:x")
	}
	cmd := exec.Command("xvfb-run", args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		})
	}
	t.Cleanup(stop)
	if short {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("xfreerdp +auth-only as %s did not finish: %s", user, out.String())
		}
	}
	return stop
}

// landed waits for exactly one of the xrdp nodes to log one more
// connection than before and returns its index.
func landed(t *testing.T, xs []*xrdpNode, before []int) int {
	t.Helper()
	got := -1
	ok := false
	defer func() {
		if !ok {
			for _, x := range xs {
				b, _ := os.ReadFile(x.log)
				t.Logf("%s's xrdp log:\n%s", x.name, b)
			}
		}
	}()
	testutil.Eventually(t, 15*time.Second, "a node's xrdp to log the connection", func() bool {
		got = -1
		for i, x := range xs {
			if x.tlsDone() > before[i] {
				if got >= 0 {
					t.Fatalf("the connection reached both %s and %s", xs[got].name, x.name)
				}
				got = i
			}
		}
		return got >= 0
	})
	ok = true
	return got
}

func tlsCounts(xs []*xrdpNode) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = x.tlsDone()
	}
	return out
}

func rdpCount(nodes []admin.NodeJSON) (total int) {
	for _, n := range nodes {
		total += n.Sessions.RDP
	}
	return total
}

func TestRDPThroughTheGateway(t *testing.T) {
	p, xs := rdpPool(t, nil)

	// alice holds an SSH session on node X: her RDP connection reaches
	// X's xrdp.
	h := p.hold("alice")
	before := tlsCounts(xs)
	freerdp(t, p, "alice", true)
	if got := landed(t, xs, before); xs[got].name != h.node {
		t.Fatalf("alice's RDP reached %s, her SSH session is on %s", xs[got].name, h.node)
	}

	// bob's held connection is counted on its node, as unverified: plain
	// RDP proves no user, so it makes no pin and counts for nobody.
	before = tlsCounts(xs)
	stopBob := freerdp(t, p, "bob", false)
	first := landed(t, xs, before)
	p.waitFor("bob's RDP connection counted on its node", func() bool {
		for _, n := range apiNodes(t, p) {
			if n.Name == xs[first].name && n.Sessions.RDP >= 1 {
				return true
			}
		}
		return false
	})
	var ss admin.SessionsJSON
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/sessions", &ss)
	found := false
	for _, s := range ss.Sessions {
		found = found || (s.User == balancer.Unverified && s.Protocol == "rdp" && s.Node == xs[first].name)
		if s.User == "bob" {
			t.Fatalf("/api/sessions names bob for a connection that only claimed him: %+v", s)
		}
	}
	if !found {
		t.Fatalf("/api/sessions has no unverified rdp session on %s: %+v", xs[first].name, ss.Sessions)
	}
	if _, pinned := p.gw.Balancer().Pinned("bob", balancer.RDP); pinned {
		t.Fatal("a cookie naming bob pinned him")
	}
	stopBob()
	p.waitFor("bob's RDP session released", func() bool { return rdpCount(apiNodes(t, p)) == 0 })

	// A node whose xrdp stops takes no new RDP users (its sshd is up).
	xs[first].stop()
	p.waitFor(xs[first].name+"'s RDP down", func() bool {
		for _, st := range p.gw.Balancer().Nodes() {
			if st.Name == xs[first].name {
				return !st.Check(balancer.RDP).Up && st.State == balancer.StateUp
			}
		}
		return false
	})
	for _, u := range []string{"carol", "dave", "bob"} {
		before = tlsCounts(xs)
		freerdp(t, p, u, true)
		if got := landed(t, xs, before); got == first {
			t.Fatalf("%s's RDP reached %s, whose xrdp is stopped", u, xs[got].name)
		}
	}
}

func TestRDPForgedCookiesCountNothing(t *testing.T) {
	p, xs := rdpPool(t, func(c *app.Config) { c.RDP.MaxUnprovenPerAddress = 250 })
	before := make([]int, len(xs))
	for i, x := range xs {
		before[i] = x.connections()
	}
	pkt := rdpgw.BuildConnectionRequest("Cookie: mstshash=mallory", 3)
	var conns []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", p.gw.RDPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Each reads what the node answers (its Connection Confirm, when the
	// node keeps up), then, past proof_time, sends a TLS record header
	// that never becomes a handshake.
	p.waitFor("the forged connections at the nodes", func() bool {
		n := 0
		for i, x := range xs {
			n += x.connections() - before[i]
		}
		return n >= 50
	})
	time.Sleep(1500 * time.Millisecond) // past proof_time (1s)
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, _ = c.Read(make([]byte, 64))
		_, _ = c.Write([]byte{0x16, 0x03, 0x01})
	}
	if n := rdpCount(apiNodes(t, p)); n != 0 {
		t.Fatalf("forged cookies counted %d RDP sessions", n)
	}
	for _, c := range conns {
		c.Close()
	}
	if n := rdpCount(apiNodes(t, p)); n != 0 || p.gw.Balancer().Started(balancer.RDP) != 0 {
		t.Fatalf("forged cookies counted: %d RDP sessions, %d started", n, p.gw.Balancer().Started(balancer.RDP))
	}
	for _, n := range apiNodes(t, p) {
		if n.Pinned != 0 {
			t.Fatalf("forged cookies pinned a user to %s", n.Name)
		}
	}
}

// TestPlainRDPMovesNoOne: mallory's connection claims alice (xrdp has no
// NLA, so it is kept at the logon screen and passes the proof). Alice's
// pin, her count and her per-user limit stay as they were; ten made-up
// names do not fill the nodes for SSH users.
func TestPlainRDPMovesNoOne(t *testing.T) {
	p, xs := rdpPool(t, func(c *app.Config) {
		c.SSH.MaxSessionsPerUser = 2
		c.Balancer.MaxSessionsPerNode = 2
	})
	alice := p.hold("alice")
	before := tlsCounts(xs)
	freerdp(t, p, "alice", false) // mallory, claiming alice
	if got := landed(t, xs, before); xs[got].name != alice.node {
		t.Fatalf("the cookie naming alice routed to %s, her node is %s", xs[got].name, alice.node)
	}
	p.waitFor("the forged connection counted on alice's node", func() bool {
		for _, n := range apiNodes(t, p) {
			if n.Name == alice.node {
				return n.Sessions.RDP == 1
			}
		}
		return false
	})
	if n := p.sessionsOf("alice"); n != 1 {
		t.Fatalf("alice has %d sessions, want her one SSH session", n)
	}
	// max_sessions_per_user 2: her second SSH session is let in, on her node.
	out, _, code := p.sshCmd("alice", `echo "$DSVM_NODE"`)
	if code != 0 || strings.TrimSpace(out) != alice.node {
		t.Fatalf("alice's second SSH session: %q exit %d, want her node %s", out, code, alice.node)
	}

	// Ten held connections with made-up names; max_sessions_per_node is 2.
	for i := range 10 {
		before := tlsCounts(xs)
		freerdp(t, p, fmt.Sprintf("fake%d", i), false)
		landed(t, xs, before)
	}
	p.waitFor("the ten counted", func() bool { return rdpCount(apiNodes(t, p)) == 11 })
	for _, u := range []string{"carol", "dave"} {
		if out, errOut, code := p.sshCmd(u, "true"); code != 0 {
			t.Fatalf("%s refused with ten unverified RDP connections held: %q %q exit %d", u, out, errOut, code)
		}
	}
	for _, pin := range p.gw.Balancer().Pins() {
		if pin.User != "alice" && pin.User != "carol" && pin.User != "dave" {
			t.Fatalf("plain RDP pinned %q", pin.User)
		}
	}
}

// TestPlainRDPWithoutNameProtectsItsNode: a desktop opened with a name
// that is no user of the pool (as with no cookie) counts on its node, so neither Azure's scale-in nor
// poolgate scale-in removes the VM under it.
func TestPlainRDPWithoutNameProtectsItsNode(t *testing.T) {
	requirePeers(t, "xrdp", "xfreerdp", "xvfb-run")
	var xs []*xrdpNode
	for i := 0; i < 2; i++ {
		xs = append(xs, startXrdp(t, fmt.Sprintf("node-%d", i+1), fmt.Sprintf("127.0.0.%d", i+2)))
	}
	w := azuretest.New()
	w.Add(vmFor(0), vmFor(1))
	p := azurePool(t, w, 2, func(c *app.Config) {
		c.Discovery.Azure.ProtectBusyNodes = true
		c.Discovery.Azure.RDPPort = 33389
		c.RDP.Listen = "127.0.0.1:0"
		c.RDP.ProofTime = time.Second
	})
	p.waitFor("both nodes' RDP up", func() bool {
		for _, st := range p.gw.Balancer().Nodes() {
			if !st.Check(balancer.RDP).Up {
				return false
			}
		}
		return true
	})
	before := tlsCounts(xs)
	freerdp(t, p, "John Smith", false) // a cookie that names no user of the pool
	busy := xs[landed(t, xs, before)].name
	id := map[string]string{"node-1": "0", "node-2": "1"}[busy]
	p.waitFor("the nameless desktop's instance protected from scale-in", func() bool {
		vm, _ := w.VM(id)
		return vm.Protected
	})
	bin := buildPoolgate(t)
	out, err := exec.Command(bin, "scale-in", "--idle", "1m", "--admin", "http://"+p.gw.AdminAddr()).CombinedOutput()
	if err != nil {
		t.Fatalf("poolgate scale-in: %v\n%s", err, out)
	}
	for _, d := range w.Deleted() {
		for _, gone := range d {
			if gone == id {
				t.Fatalf("scale-in deleted %s, where a desktop is open:\n%s", busy, out)
			}
		}
	}
	if want := busy + " (instance " + id + "): has 1 sessions"; !strings.Contains(string(out), want) {
		t.Fatalf("poolgate scale-in does not say %q:\n%s", want, out)
	}
}
