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

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/internal/testutil"
)

// node is a real sshd on 127.0.0.N:2222.
type node struct {
	name, addr, dir string
	cfgPath         string
	gwAddr          string     // where the gateway reaches it: addr, or its middlebox
	box             *middlebox // between gateway and node, when the pool has them
	cmd             *exec.Cmd
	done            chan struct{}
}

func startNode(t *testing.T, name, ip, caFile string) *node {
	t.Helper()
	n := &node{name: name, addr: net.JoinHostPort(ip, "2222"), dir: filepath.Join(t.TempDir())}
	n.gwAddr = n.addr
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(n.dir, "host_key"))
	conf := fmt.Sprintf(`ListenAddress %s
HostKey %s/host_key
PidFile none
TrustedUserCAKeys %s
AuthorizedKeysFile none
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
SetEnv DSVM_NODE=%s
AcceptEnv POOLGATE_*
Subsystem sftp internal-sftp
AllowTcpForwarding yes
AllowAgentForwarding yes
X11Forwarding yes
X11UseLocalhost yes
PrintMotd no
PrintLastLog no
StrictModes no
MaxStartups 200
MaxSessions 100
LogLevel ERROR
`, n.addr, n.dir, caFile, name)
	n.cfgPath = filepath.Join(n.dir, "sshd_config")
	if err := os.WriteFile(n.cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start(t)
	t.Cleanup(n.stop)
	return n
}

func (n *node) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(sshdPath, "-D", "-e", "-f", n.cfgPath)
	n.cmd.Stderr = &prefixWriter{t: t, prefix: n.name + " sshd: "}
	// sshd's connection children inherit the stderr pipe; do not wait for
	// them to close it once the listener has exited.
	n.cmd.WaitDelay = time.Second
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("starting sshd for %s: %v", n.name, err)
	}
	n.done = make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	var err error
	testutil.Eventually(t, 10*time.Second, "sshd for "+n.name+" to listen on "+n.addr, func() bool {
		if err = discovery.SSHBannerProbe(&net.Dialer{})(context.Background(), balancer.Node{SSH: n.addr}); err == nil {
			return true
		}
		select {
		case <-n.done:
			t.Fatalf("sshd for %s exited at start (is %s in use?)", n.name, n.addr)
		default:
		}
		return false
	})
}

// rekey restarts the node's sshd with a new host key, as a rebuilt VM
// would come back.
func (n *node) rekey(t *testing.T) {
	t.Helper()
	n.stop()
	key := filepath.Join(n.dir, "host_key")
	os.Remove(key)
	os.Remove(key + ".pub")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	n.start(t)
}

// stop ends the node's sshd listener (sessions already open on it are
// served by sshd's children until they end).
func (n *node) stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// prefixWriter sends a process's output lines to the test log. exec.Cmd's
// WaitDelay ends its writes when the process is waited for, within the test.
type prefixWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex // keeps one write's lines together
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + line)
	}
	return len(p), nil
}
