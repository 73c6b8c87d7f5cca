package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
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
	var out []int
	for _, p := range procs() {
		zombie := p.state == "Z"
		if p.ppid == me && (zombie || slices.ContainsFunc(orphanComms, func(c string) bool { return strings.HasPrefix(p.comm, c) })) {
			out = append(out, p.pid)
		}
	}
	return out
}

// proc is one process as /proc/PID/stat shows it.
type proc struct {
	pid, ppid int
	state     string
	comm      string
}

// procs lists the machine's processes.
func procs() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
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
		out = append(out, proc{pid: pid, ppid: ppid, state: f[0], comm: s[strings.IndexByte(s, '(')+1 : i]})
	}
	return out
}

// orphanComms are the command names of processes the tests' peers leave
// behind when their parent exits first: sshd's connection children,
// Chromium's helpers, and JupyterHub's proxy, single-user servers and
// kernels (when a hub is killed rather than stopped).
var orphanComms = []string{"sshd", "chrom", "jupyterhub", "configurable-ht", "node", "python3"}
