package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/internal/testutil"
)

// buildPoolgate compiles the command as an operator would get it.
func buildPoolgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "poolgate")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/poolgate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestOperatorQuickStart follows the README: write a config, put the
// ca-pubkey line on the nodes, run serve, ssh through it, stop with SIGTERM.
func TestOperatorQuickStart(t *testing.T) {
	requirePeers(t, sshdPath, "ssh", "ssh-keygen", "useradd")
	users := []string{"alice", "bob", "carol"}
	for _, u := range users {
		ensureUser(t, u, "")
	}
	t.Cleanup(func() { reapOrphans(t) })
	bin := buildPoolgate(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	pub, _ := os.ReadFile(key + ".pub")
	for _, u := range users {
		os.MkdirAll(filepath.Join(dir, "keys", u), 0o755)
		os.WriteFile(filepath.Join(dir, "keys", u, "authorized_keys"), pub, 0o644)
	}
	listen := freePort(t)
	conf := filepath.Join(dir, "poolgate.yaml")
	yaml := fmt.Sprintf(`state_dir: %s/state
shutdown_timeout: 3s
ssh:
  listen: %s
  authorized_keys: %s/keys/{user}/authorized_keys
balancer:
  affinity_grace: 30m
health:
  interval: 200ms
discovery:
  static:
    - name: node-1
      ssh: 127.0.0.2:2222
    - name: node-2
      ssh: 127.0.0.3:2222
`, dir, listen, dir)
	if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}

	// ca-pubkey creates the CA once and prints the same line every time.
	line := strings.TrimSpace(run(t, bin, "ca-pubkey", "--config", conf))
	if !strings.HasPrefix(line, "ssh-ed25519 ") || !strings.HasSuffix(line, " poolgate-user-ca") {
		t.Fatalf("ca-pubkey printed %q", line)
	}
	if again := strings.TrimSpace(run(t, bin, "ca-pubkey", "--config", conf)); again != line {
		t.Fatalf("ca-pubkey changed: %q then %q", line, again)
	}
	if st, err := os.Stat(filepath.Join(dir, "state", "user_ca_ed25519_key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	os.WriteFile(caFile, []byte(line+"\n"), 0o644)
	startNode(t, "node-1", "127.0.0.2", caFile)
	startNode(t, "node-2", "127.0.0.3", caFile)

	proc := startServe(t, bin, conf, listen)
	srv, exited, logs := proc.cmd, proc.exited, &proc.logs

	_, port, _ := net.SplitHostPort(listen)
	sshTo := func(user string) (string, error) {
		var out, errs bytes.Buffer
		c := exec.Command("ssh", "-F", "/dev/null", "-p", port, "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile="+filepath.Join(dir, "known_hosts"),
			user+"@127.0.0.1", `echo "$DSVM_NODE"; sleep 1`)
		c.Stdout, c.Stderr = &out, &errs
		if err := c.Run(); err != nil {
			return "", fmt.Errorf("ssh %s through poolgate serve: %v; stderr %q", user, err, errs.String())
		}
		return strings.TrimSpace(out.String()), nil
	}
	// The node health checks need a moment after start; a login before them
	// is refused. carol (who plays no further part) waits for the first one
	// that works.
	testutil.Eventually(t, 10*time.Second, "carol's first login", func() bool {
		var out bytes.Buffer
		c := exec.Command("ssh", "-F", "/dev/null", "-p", port, "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile="+filepath.Join(dir, "known_hosts"), "carol@127.0.0.1", "true")
		c.Stderr = &out
		return c.Run() == nil
	})
	// alice, then bob while alice is still connected: different nodes.
	type result struct {
		node string
		err  error
	}
	aliceCh := make(chan result, 1)
	go func() { n, err := sshTo("alice"); aliceCh <- result{n, err} }()
	time.Sleep(300 * time.Millisecond)
	bob, bobErr := sshTo("bob")
	a := <-aliceCh
	for _, err := range []error{a.err, bobErr} {
		if err != nil {
			t.Fatalf("%v; log:\n%s", err, logs.String())
		}
	}
	if alice := a.node; alice == "" || bob == "" || alice == bob {
		t.Fatalf("alice on %q, bob on %q: want two different nodes", alice, bob)
	}

	// SIGTERM with a session open: the user is told, and the gateway exits
	// 0 within its shutdown_timeout (3s), closing the session.
	var heldErr testutil.SyncBuffer
	held := exec.Command("ssh", "-F", "/dev/null", "-p", port, "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile="+filepath.Join(dir, "known_hosts"),
		"alice@127.0.0.1", "echo ready; exec cat")
	held.Stderr = &heldErr
	heldIn, _ := held.StdinPipe()
	heldOut, _ := held.StdoutPipe()
	if err := held.Start(); err != nil {
		t.Fatal(err)
	}
	defer heldIn.Close()
	if line, err := readLine(bufio.NewReader(heldOut), 10*time.Second); err != nil || line != "ready\n" {
		t.Fatalf("held session: %q %v; stderr %q", line, err, heldErr.String())
	}
	signalled := time.Now()
	srv.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("poolgate serve after SIGTERM: %v; log:\n%s", err, logs.String())
		}
		if took := time.Since(signalled); took > 5*time.Second {
			t.Errorf("exited %s after SIGTERM; shutdown_timeout is 3s", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("poolgate serve still running 15s after SIGTERM")
	}
	_ = held.Wait()
	if want := "poolgate: the gateway is shutting down; this connection will be closed in 3s"; !strings.Contains(heldErr.String(), want) {
		t.Errorf("held session's stderr %q lacks %q", heldErr.String(), want)
	}
	for _, want := range []string{`"msg":"poolgate started"`, `"msg":"ssh session started"`, `"user":"alice"`, `"msg":"shutting down"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

// TestServeRejectsBadConfig: a config error stops serve at start, naming
// the file, the line and the key.
func TestServeRejectsBadConfig(t *testing.T) {
	bin := buildPoolgate(t)
	dir := t.TempDir()
	for _, tt := range []struct{ yaml, want string }{
		{"ssh:\n  lisen: 0.0.0.0:22\n", "poolgate.yaml:2: ssh.lisen: unknown key"},
		{"health:\n  interval: 5x\n", `poolgate.yaml:2: health.interval: "5x" is not a duration`},
		{"ssh:\n  listen: nowhere\ndiscovery:\n  static: [{name: a, ssh: 'h:22'}]\n", `poolgate.yaml:2: ssh.listen: "nowhere" is not host:port`},
		{"state_dir: /tmp\n", "poolgate.yaml: discovery.static: list at least one node"},
		{"admin:\n  listen: 0.0.0.0:9090\ndiscovery:\n  static: [{name: a, ssh: 'h:22'}]\n", "poolgate.yaml:1: admin.token_file: required when listen (0.0.0.0:9090) is not a loopback address"},
	} {
		conf := filepath.Join(dir, "poolgate.yaml")
		os.WriteFile(conf, []byte(tt.yaml), 0o644)
		cmd := exec.Command(bin, "serve", "--config", conf)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), tt.want) {
			t.Errorf("config %q: err %v, output %q; want exit 1 and %q", tt.yaml, err, out, tt.want)
		}
	}
}

// serveProc is a running `poolgate serve`, its log and its end.
type serveProc struct {
	cmd    *exec.Cmd
	logs   testutil.SyncBuffer
	exited chan error
}

// startServe runs `poolgate serve --config conf` and waits until its SSH
// listener at listen answers. It is killed at the end of the test if
// still running, and its log is shown when the test failed.
func startServe(t *testing.T, bin, conf, listen string) *serveProc {
	t.Helper()
	p := &serveProc{cmd: exec.Command(bin, "serve", "--config", conf), exited: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("poolgate serve's log:\n%s", p.logs.String())
		}
	})
	testutil.Eventually(t, 15*time.Second, "poolgate serve to listen", func() bool {
		return discovery.SSHBannerProbe(&net.Dialer{})(context.Background(), balancer.Node{SSH: listen}) == nil
	})
	return p
}
