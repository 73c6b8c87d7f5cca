package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

func TestMain(m *testing.M) {
	// sshd's per-connection children outlive a stopped sshd; as subreaper
	// this process inherits them, and reapOrphans ends them.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	goleak.VerifyTestMain(m)
}

// requirePeers fails (in CI) or skips (elsewhere) when the real peers are
// not available.
func requirePeers(t *testing.T, bins ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (to run sshd and create test users)")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("end-to-end test needs %s; .ci/run installs them", strings.Join(missing, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (skipped because CI is unset; with CI set this fails)")
}

var sshdPath = "/usr/sbin/sshd"

// ensureUser creates a local account with an unlocked, unusable password
// ('*'), as sshd refuses locked ('!') accounts; password, if set, becomes
// its password.
func ensureUser(t *testing.T, name, password string) {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		run(t, "useradd", "-m", "-s", "/bin/sh", name)
	}
	if password == "" {
		run(t, "usermod", "-p", "*", name)
		return
	}
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v: %s", err, out)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

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
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := discovery.SSHBannerProbe(&net.Dialer{})(context.Background(), balancer.Node{SSH: n.addr})
		if err == nil {
			return
		}
		select {
		case <-n.done:
			t.Fatalf("sshd for %s exited at start (is %s in use?)", n.name, n.addr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd for %s not listening on %s: %v", n.name, n.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// reapOrphans ends and reaps processes re-parented to this test process
// (sshd connection children whose listener was stopped).
func reapOrphans(t *testing.T) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := orphans()
		if len(pids) == 0 {
			return
		}
		sig := syscall.SIGTERM
		if time.Now().After(deadline) {
			sig = syscall.SIGKILL
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// orphans lists processes re-parented to this process: sshd's connection
// children, Chromium's helpers after its main process exits, and any
// child that has exited unreaped. Processes that exec.Cmd started are
// waited for by their owners before a test's cleanup runs.
func orphans() []int {
	me := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		comm := s[strings.IndexByte(s, '(')+1 : i]
		zombie := f[0] == "Z"
		if ppid == me && (zombie || slices.ContainsFunc(orphanComms, func(c string) bool { return strings.HasPrefix(comm, c) })) {
			out = append(out, pid)
		}
	}
	return out
}

// orphanComms are the command names of processes the tests' peers leave
// behind when their parent exits first: sshd's connection children,
// Chromium's helpers, and JupyterHub's proxy, single-user servers and
// kernels (when a hub is killed rather than stopped).
var orphanComms = []string{"sshd", "chrom", "jupyterhub", "configurable-ht", "node", "python3"}

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
	hubs    []*hub // when poolOptions.hubs
}

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
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
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
				if st.HTTPUp {
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
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s; nodes: %+v", what, p.gw.Balancer().Nodes())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sshArgs are the client options every test uses: no user config, this
// test's key only, a throw-away known_hosts.
func (p *pool) sshArgs(portFlag string) []string { return clientArgs(p.dir, p.key, p.entry, portFlag) }

// clientArgs are OpenSSH client options for a test: no user config, the
// key only, a known_hosts in dir, entry's port after portFlag.
func clientArgs(dir, key, entry, portFlag string) []string {
	_, port, _ := net.SplitHostPort(entry)
	return []string{
		"-F", "/dev/null", portFlag, port,
		"-i", key, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + filepath.Join(dir, "known_hosts"),
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "ConnectTimeout=10",
	}
}

// ssh runs the real ssh client through the gateway and returns stdout,
// stderr and the exit status.
func (p *pool) ssh(user string, stdin io.Reader, extra ...string) (string, string, int) {
	p.t.Helper()
	args := append(p.sshArgs("-p"), extra...)
	args = append(args, user+"@127.0.0.1")
	return p.runClient("ssh", args, stdin)
}

func (p *pool) sshCmd(user, command string, extra ...string) (string, string, int) {
	p.t.Helper()
	args := append(p.sshArgs("-p"), "-o", "BatchMode=yes")
	args = append(args, extra...)
	args = append(args, user+"@127.0.0.1", command)
	return p.runClient("ssh", args, nil)
}

func (p *pool) runClient(name string, args []string, stdin io.Reader) (string, string, int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling tty: never prompt
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		p.t.Fatalf("%s: %v", name, err)
	}
	return out.String(), errb.String(), code
}

// held is an open SSH session kept alive until close.
type held struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader // the session's stdout after the node line
	node  string
	errb  syncBuffer
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// hold opens a session for user that prints its node and then waits on
// stdin; it returns once the node name has arrived.
func (p *pool) hold(user string) *held {
	p.t.Helper()
	h, err := startHeld(p.t, append(p.sshArgs("-p"), "-o", "BatchMode=yes", user+"@127.0.0.1"))
	if err != nil {
		p.t.Fatalf("session of %s: %v", user, err)
	}
	return h
}

// startHeld runs ssh with args and a command that prints the node, then
// waits on stdin; it returns once the node name has arrived. The session
// is closed at the test's end.
func startHeld(t *testing.T, args []string) (*held, error) {
	t.Helper()
	h := &held{cmd: exec.Command("ssh", append(args, `echo "$DSVM_NODE"; exec cat`)...)}
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	h.cmd.Stderr = &h.errb
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	h.out = bufio.NewReader(stdout)
	line, err := h.out.ReadString('\n')
	if err != nil {
		h.close()
		return h, fmt.Errorf("printed no node: %v; stderr: %s", err, h.errb.String())
	}
	h.node = strings.TrimSpace(line)
	return h, nil
}

// wait waits for the session to end by itself, up to d.
func (h *held) wait(d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		h.stdin = nil
		return err
	case <-time.After(d):
		return fmt.Errorf("session still open after %s", d)
	}
}

// close ends the session by closing its stdin, as a user ending cat would.
func (h *held) close() {
	if h.stdin == nil {
		return
	}
	h.stdin.Close()
	h.stdin = nil
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
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
