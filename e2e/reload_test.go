package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testutil"
)

// TestReloadKeepsSessions: `poolgate serve` gets SIGHUP while a user's
// ssh session runs. The session goes on and ends with its output and exit
// status intact; logins are served throughout; a node added to the file
// takes users; a limit changed in the file holds for new logins; a file
// with an error is refused whole, and the gateway says what it applied
// and what needs a restart.
func TestReloadKeepsSessions(t *testing.T) {
	requirePeers(t, sshdPath, "ssh", "ssh-keygen", "useradd")
	for _, u := range testUsers {
		ensureUser(t, u, "")
	}
	t.Cleanup(func() { reapOrphans(t) })
	bin := buildPoolgate(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	pub, _ := os.ReadFile(key + ".pub")
	for _, u := range testUsers {
		_ = os.MkdirAll(filepath.Join(dir, "keys", u), 0o755)
		_ = os.WriteFile(filepath.Join(dir, "keys", u, "authorized_keys"), pub, 0o644)
	}
	listen, admin := freePort(t), freePort(t)
	conf := filepath.Join(dir, "poolgate.yaml")
	write := func(maxPerNode int, nodes ...string) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "state_dir: %s/state\nshutdown_timeout: 3s\nssh:\n  listen: %s\n  authorized_keys: %s/keys/{user}/authorized_keys\nadmin:\n  listen: %s\nhealth:\n  interval: 200ms\nbalancer:\n  max_sessions_per_node: %d\ndiscovery:\n  static:\n", dir, listen, dir, admin, maxPerNode)
		for i, n := range nodes {
			fmt.Fprintf(&b, "    - name: node-%d\n      ssh: %s\n", i+1, n)
		}
		if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1, "127.0.0.2:2222")
	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	_ = os.WriteFile(caFile, []byte(run(t, bin, "ca-pubkey", "--config", conf)), 0o644)
	startNode(t, "node-1", "127.0.0.2", caFile)
	startNode(t, "node-2", "127.0.0.3", caFile)
	proc := startServe(t, bin, conf, listen)
	sshTo := func(user string, extra ...string) *exec.Cmd {
		c := exec.Command("ssh", append(append(append([]string{"-o", "BatchMode=yes"}, clientArgs(dir, key, listen, "-p")...), user+"@127.0.0.1"), extra...)...)
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		return c
	}
	testutil.Eventually(t, 10*time.Second, "a first login", func() bool { return sshTo("carol", "true").Run() == nil })

	// alice's session: it prints, waits for a line on stdin, prints what
	// it read and exits 7.
	alice := sshTo("alice", `echo "on $DSVM_NODE"; read line; echo "got $line"; exit 7`)
	in, _ := alice.StdinPipe()
	var out testutil.SyncBuffer
	alice.Stdout = &out
	if err := alice.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "alice's session to start", func() bool { return strings.Contains(out.String(), "on node-1") })
	// node-1 is full (max_sessions_per_node: 1): bob has nowhere to go.
	if err := sshTo("bob", "true").Run(); err == nil {
		t.Fatal("bob got in while the only node was full")
	}

	// A broken file is refused whole.
	if err := os.WriteFile(conf, []byte("ssh:\n  listen: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = proc.cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, 10*time.Second, "the broken file's refusal in the log", func() bool {
		return strings.Contains(proc.logs.String(), "SIGHUP: the config file has errors, so none of it is applied")
	})
	// node-2 added, and room for two per node.
	write(2, "127.0.0.2:2222", "127.0.0.3:2222")
	_ = proc.cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, 10*time.Second, "the reload in the log", func() bool {
		return strings.Contains(proc.logs.String(), `"msg":"SIGHUP: reloaded"`) && strings.Contains(proc.logs.String(), "discovery.static: 2 nodes")
	})
	var seen = map[string]bool{}
	for _, u := range []string{"bob", "dave", "erin"} {
		b, err := sshTo(u, "echo $DSVM_NODE").Output()
		if err != nil {
			t.Fatalf("%s after the reload: %v", u, err)
		}
		seen[strings.TrimSpace(string(b))] = true
	}
	if !seen["node-2"] {
		t.Errorf("no login went to node-2, added by the reload: %v", seen)
	}
	// alice's session went on through both reloads.
	if _, err := io.WriteString(in, "hello\n"); err != nil {
		t.Fatal(err)
	}
	err := alice.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 || !strings.Contains(out.String(), "got hello") {
		t.Fatalf("alice's session across the reloads: %v, output %q", err, out.String())
	}
}
