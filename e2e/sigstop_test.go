package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// TestHungNodeFoundByKeepalives: a node that hangs (its sshd SIGSTOPped:
// the TCP connection stays up, nothing answers) is found by the gateway's
// keepalives within interval × count + interval, as OpenSSH's
// ServerAliveInterval would find it, and the user is told.
func TestHungNodeFoundByKeepalives(t *testing.T) {
	const interval, count = 2 * time.Second, 2
	p := newPool(t, poolOptions{nodes: 1, cfg: func(c *app.Config) {
		c.SSH.KeepaliveInterval = interval
		c.SSH.KeepaliveCountMax = count
	}})
	h := p.hold("alice")
	n := p.node(h.node)

	stopped := freeze(t, n.cmd.Process.Pid)
	frozenAt := time.Now()
	t.Logf("SIGSTOPped %s's sshd and its children: %v", n.name, stopped)
	const want = "stopped responding"
	limit := interval*count + interval
	for !strings.Contains(h.errb.String(), want) && time.Since(frozenAt) < 3*limit {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(frozenAt)
	if !strings.Contains(h.errb.String(), want) {
		t.Fatalf("no %q notice %s after the node hung; client's stderr %q", want, took.Round(time.Millisecond), h.errb.String())
	}
	t.Logf("the client was told %s after the node hung (interval %s, count %d)", took.Round(time.Millisecond), interval, count)
	if slack := time.Second; took > limit+slack {
		t.Errorf("hung node found after %s, want within interval × count + interval = %s (+%s slack)", took.Round(time.Millisecond), limit, slack)
	}
	if err := h.wait(10 * time.Second); err == nil {
		t.Error("ssh exited 0 after its node hung")
	}
}

// freeze SIGSTOPs pid and all its descendants (as a hung VM, whose
// processes all stop) and SIGCONTs them at the test's end, before the
// pool's cleanup stops them. It returns the PIDs it stopped.
func freeze(t *testing.T, pid int) []int {
	t.Helper()
	var stopped []int
	t.Cleanup(func() {
		for _, p := range stopped {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	})
	seen := map[int]bool{}
	// Stopping the parent first keeps it from starting children meanwhile;
	// the loop catches those started before it stopped.
	for todo := []int{pid}; len(todo) > 0; todo = descendants(pid, seen) {
		for _, p := range todo {
			if syscall.Kill(p, syscall.SIGSTOP) == nil {
				stopped = append(stopped, p)
			}
			seen[p] = true
		}
	}
	return stopped
}

// descendants lists the processes below root not in seen.
func descendants(root int, seen map[int]bool) []int {
	parent := map[int]int{}
	for _, p := range procs() {
		parent[p.pid] = p.ppid
	}
	var out []int
	for pid := range parent {
		if seen[pid] || pid == root {
			continue
		}
		for a, hops := parent[pid], 0; a > 1 && hops < 64; a, hops = parent[a], hops+1 {
			if a == root {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}
