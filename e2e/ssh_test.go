package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
)

// TestRoutingAndAffinity: users spread over the nodes by load, stay on
// their node while connected and through the grace, and are free after it.
func TestRoutingAndAffinity(t *testing.T) {
	const grace = 3 * time.Second
	p := newPool(t, poolOptions{cfg: func(c *app.Config) { c.Balancer.AffinityGrace = grace }})

	alice1 := p.hold("alice")
	bob := p.hold("bob")
	carol := p.hold("carol")
	nodes := map[string]string{"alice": alice1.node, "bob": bob.node, "carol": carol.node}
	if alice1.node == bob.node || bob.node == carol.node || alice1.node == carol.node {
		t.Fatalf("alice, bob and carol, connected together, share a node: %v", nodes)
	}
	home := alice1.node

	alice2 := p.hold("alice")
	if alice2.node != home {
		t.Fatalf("alice's second session landed on %s, want her node %s", alice2.node, home)
	}
	alice2.close()

	// Make alice's node the busiest without her: a helper user who lands
	// there (new users go to the least-loaded node, so one of at most three
	// does) opens two more sessions.
	var helper string
	for _, u := range []string{"dave", "erin", "frank"} {
		if h := p.hold(u); h.node == home {
			helper = u
			break
		}
	}
	if helper == "" {
		t.Fatalf("none of dave, erin, frank landed on %s although it was least loaded", home)
	}
	for i := 0; i < 2; i++ {
		if h := p.hold(helper); h.node != home {
			t.Fatalf("%s's session %d landed on %s, want %s", helper, i+2, h.node, home)
		}
	}

	alice1.close()
	p.waitFor("alice's sessions to end", func() bool { return p.sessionsOf("alice") == 0 })
	// Within the grace: alice goes home although it is the busiest node.
	within := p.hold("alice")
	if within.node != home {
		t.Fatalf("within the grace alice landed on %s, want %s (the busiest node, where she was)", within.node, home)
	}
	within.close()
	p.waitFor("alice's sessions to end", func() bool { return p.sessionsOf("alice") == 0 })

	time.Sleep(grace + 500*time.Millisecond)
	after := p.hold("alice")
	if after.node == home {
		t.Fatalf("after the grace alice still landed on %s, the busiest node", home)
	}
}

// TestShellsStreamsAndCopies: PTY shell, exit codes, large separate
// stdout/stderr, stdin EOF and scp through the gateway.
func TestShellsStreamsAndCopies(t *testing.T) {
	p := newPool(t, poolOptions{})

	t.Run("tty shell", func(t *testing.T) {
		out, errs, code := p.ssh("alice", strings.NewReader("echo on-$DSVM_NODE\nexit 3\n"), "-tt", "-o", "BatchMode=yes")
		if code != 3 || !strings.Contains(out, "on-node-") {
			t.Fatalf("ssh -tt: exit %d, stdout %q, stderr %q", code, out, errs)
		}
	})

	t.Run("exit status", func(t *testing.T) {
		if _, errs, code := p.sshCmd("alice", "exit 7"); code != 7 {
			t.Fatalf("ssh 'exit 7' exited %d; stderr %q", code, errs)
		}
	})

	t.Run("100 MB stdout and a separate stderr", func(t *testing.T) {
		const size = 100_000_000
		cmd := fmt.Sprintf(`seq 1 50000 >&2 & yes poolgate-0123456789 | head -c %d; wait`, size)
		args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "alice@127.0.0.1", cmd)
		c := exec.Command("ssh", args...)
		stdout, _ := c.StdoutPipe()
		var errb bytes.Buffer
		c.Stderr = &errb
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, _ := io.Copy(h, stdout)
		if err := c.Wait(); err != nil {
			t.Fatalf("ssh: %v; stderr tail %q", err, tail(errb.String()))
		}
		want := sha256.New()
		line := []byte("poolgate-0123456789\n")
		for left := size; left > 0; left -= len(line) {
			want.Write(line[:min(len(line), left)])
		}
		if n != size || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
			t.Fatalf("stdout: %d bytes, checksum match %v; want %d bytes matching", n, bytes.Equal(h.Sum(nil), want.Sum(nil)), size)
		}
		var seq strings.Builder
		for i := 1; i <= 50000; i++ {
			fmt.Fprintf(&seq, "%d\n", i)
		}
		if errb.String() != seq.String() {
			t.Fatalf("stderr differs from seq 1 50000 (%d bytes, want %d); tail %q", errb.Len(), seq.Len(), tail(errb.String()))
		}
	})

	t.Run("cat ends when stdin closes", func(t *testing.T) {
		args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "alice@127.0.0.1", "cat")
		out, errs, code := p.runClient("ssh", args, strings.NewReader("hello through the gateway\n"))
		if code != 0 || out != "hello through the gateway\n" {
			t.Fatalf("cat: exit %d, stdout %q, stderr %q", code, out, errs)
		}
	})

	t.Run("scp 100 MB both ways", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "up.bin")
		f, err := os.Create(src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(f, rand.Reader, 100<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		remote := "poolgate-e2e-scp.bin"
		t.Cleanup(func() { os.Remove("/home/alice/" + remote) })
		scp := func(from, to string) {
			args := append(p.sshArgs("-P"), "-o", "BatchMode=yes", "-q", from, to)
			if out, errs, code := p.runClient("scp", args, nil); code != 0 {
				t.Fatalf("scp %s %s: exit %d: %s %s", from, to, code, out, errs)
			}
		}
		scp(src, "alice@127.0.0.1:"+remote)
		back := filepath.Join(t.TempDir(), "down.bin")
		scp("alice@127.0.0.1:"+remote, back)
		want := fileSum(t, src)
		if got := fileSum(t, "/home/alice/"+remote); got != want {
			t.Fatalf("uploaded file checksum %s, want %s", got, want)
		}
		if got := fileSum(t, back); got != want {
			t.Fatalf("downloaded file checksum %s, want %s", got, want)
		}
	})

	t.Run("password verified by the node", func(t *testing.T) {
		args := append([]string{"-p", "pat-secret-1", "ssh"}, p.sshArgs("-p")...)
		args = append(args, "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no", "pat@127.0.0.1", `echo "$DSVM_NODE"`)
		out, errs, code := p.runClient("sshpass", args, nil)
		if code != 0 || !strings.HasPrefix(out, "node-") {
			t.Fatalf("right password: exit %d, stdout %q, stderr %q", code, out, errs)
		}
		args[1] = "wrong"
		if _, errs, code := p.runClient("sshpass", args, nil); code == 0 {
			t.Fatalf("wrong password logged in; stderr %q", errs)
		}
		// keyboard-interactive: the gateway asks, the node (which offers
		// only password) verifies.
		args[1] = "pat-secret-1"
		for i, a := range args {
			if a == "PreferredAuthentications=password,keyboard-interactive" {
				args[i] = "PreferredAuthentications=keyboard-interactive"
			}
		}
		out, errs, code = p.runClient("sshpass", args, nil)
		if code != 0 || !strings.HasPrefix(out, "node-") {
			t.Fatalf("keyboard-interactive: exit %d, stdout %q, stderr %q", code, out, errs)
		}
	})
}

// TestNodeDown: a stopped node is marked down within interval × fall and
// new sessions avoid it; its user is moved and told.
func TestNodeDown(t *testing.T) {
	p := newPool(t, poolOptions{})
	a := p.hold("alice")
	victim := a.node
	a.close()

	hc := discovery.HealthConfig{Interval: 200 * time.Millisecond, Rise: 1, Fall: 2}.WithDefaults()
	stopped := time.Now()
	p.node(victim).stop()
	p.waitFor(victim+" down", func() bool {
		for _, st := range p.gw.Balancer().Nodes() {
			if st.Name == victim {
				return st.State == balancer.StateDown
			}
		}
		return false
	})
	// Fall probes, one interval apart, each bounded by the timeout; plus one
	// interval for the probe cycle in flight when the node stopped.
	if took, limit := time.Since(stopped), time.Duration(hc.Fall+1)*hc.Interval+hc.Timeout; took > limit {
		t.Errorf("%s marked down after %s, want within %s", victim, took, limit)
	}

	for _, u := range []string{"bob", "carol", "dave"} {
		if h := p.hold(u); h.node == victim {
			t.Fatalf("%s landed on down node %s", u, victim)
		}
	}
	out, errs, code := p.sshCmd("alice", `echo "$DSVM_NODE"`)
	if code != 0 || strings.TrimSpace(out) == victim {
		t.Fatalf("alice after her node stopped: exit %d, node %q, stderr %q", code, out, errs)
	}
	if want := fmt.Sprintf("node %s, where your sessions ran, is no longer available; you are now on node %s", victim, strings.TrimSpace(out)); !strings.Contains(errs, want) {
		t.Fatalf("alice's stderr %q lacks %q", errs, want)
	}
}

// TestRefusals: each refusal is a clear message, exit 255, and the gateway
// keeps serving others.
func TestRefusals(t *testing.T) {
	p := newPool(t, poolOptions{})
	otherKey := filepath.Join(t.TempDir(), "other")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", otherKey)
	wrongKey := func(user string) (string, int) {
		args := append(p.sshArgs("-p"), "-o", "PreferredAuthentications=publickey,keyboard-interactive")
		args = append(args, "-i", otherKey, user+"@127.0.0.1", "true")
		// the pool's key is listed first by sshArgs; drop it for this run
		for i := range args {
			if args[i] == p.key {
				args[i] = otherKey
			}
		}
		_, errs, code := p.runClient("ssh", args, nil)
		return errs, code
	}
	for _, tt := range []struct{ name, user, want string }{
		{"wrong key", "alice", "poolgate: none of the keys you offered is authorized for alice on this pool."},
		{"unknown user", "nosuchuser", "poolgate: none of the keys you offered is authorized for nosuchuser on this pool."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errs, code := wrongKey(tt.user)
			if code != 255 || !strings.Contains(errs, tt.want) {
				t.Fatalf("exit %d, stderr %q; want 255 and %q", code, errs, tt.want)
			}
		})
	}
	t.Run("node refuses the user", func(t *testing.T) {
		_, errs, code := p.sshCmd("ghost", "true")
		if code != 255 || !strings.Contains(errs, "refused the login for ghost") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})
	t.Run("others still served", func(t *testing.T) {
		if out, errs, code := p.sshCmd("alice", "echo ok"); code != 0 || out != "ok\n" {
			t.Fatalf("alice after refusals: exit %d, %q, %q", code, out, errs)
		}
	})
	t.Run("node host key changed", func(t *testing.T) {
		// Host keys are recorded on first contact: make sure every node's
		// is known. Three users connected together land on three
		// different nodes.
		var open []*held
		for _, u := range []string{"bob", "carol", "dave"} {
			open = append(open, p.hold(u))
		}
		for _, h := range open {
			h.close()
		}
		for _, n := range p.nodes {
			n.rekey(t)
		}
		p.waitFor("every node up", func() bool {
			for _, st := range p.gw.Balancer().Nodes() {
				if st.State != balancer.StateUp {
					return false
				}
			}
			return true
		})
		_, errs, code := p.sshCmd("erin", "true")
		if want := "failed the gateway's host key check, so the login was stopped"; code != 255 || !strings.Contains(errs, want) {
			t.Fatalf("exit %d, stderr %q; want 255 and %q", code, errs, want)
		}
	})
	t.Run("no live node", func(t *testing.T) {
		for _, n := range p.nodes {
			n.stop()
		}
		p.waitFor("every node down", func() bool {
			for _, st := range p.gw.Balancer().Nodes() {
				if st.State != balancer.StateDown {
					return false
				}
			}
			return true
		})
		// Every check failing could be a busy pool, so the first login
		// tries the nodes that are not known gone; each refuses, and
		// the user is told which were tried. Now they are gone: the next
		// login is told at once that no node can take it.
		_, errs, code := p.sshCmd("bob", "true")
		if want := "poolgate: could not reach node"; code != 255 || !strings.Contains(errs, want) {
			t.Fatalf("first login: exit %d, stderr %q; want 255 and %q", code, errs, want)
		}
		_, errs, code = p.sshCmd("bob", "true")
		if want := "poolgate: no node in the pool can take your session right now"; code != 255 || !strings.Contains(errs, want) {
			t.Fatalf("exit %d, stderr %q; want 255 and %q", code, errs, want)
		}
	})
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func tail(s string) string { return tailN(s, 200) }
