package e2e

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// TestKeepalivesAcrossMiddleboxes: with middleboxes that drop connections
// idle for 1.5 s on both legs (client–gateway and gateway–node), a silent
// session survives 6 s (four idle periods; the issue's "5 minutes behind a
// 4-minute timer", scaled down) thanks to the gateway's keepalives, and
// dies without them.
func TestKeepalivesAcrossMiddleboxes(t *testing.T) {
	const idle = 1500 * time.Millisecond
	silentSession := func(t *testing.T, keepalive time.Duration) (alive bool, p *pool) {
		p = newPool(t, poolOptions{nodes: 1, nodeBoxes: true, nodeIdle: idle, clientIdle: idle,
			cfg: func(c *app.Config) { c.SSH.KeepaliveInterval = keepalive }})
		h := p.hold("alice")
		time.Sleep(4 * idle)
		if _, err := h.stdin.Write([]byte("still here\n")); err != nil {
			return false, p
		}
		line, err := readLine(h.out, 5*time.Second)
		return err == nil && line == "still here\n", p
	}
	t.Run("with keepalives", func(t *testing.T) {
		if alive, p := silentSession(t, 400*time.Millisecond); !alive {
			t.Fatalf("silent session died behind the middleboxes; node box drops %d", p.nodes[0].box.drops.Load())
		}
	})
	t.Run("control: without keepalives the middleboxes cut it", func(t *testing.T) {
		if alive, _ := silentSession(t, -1); alive {
			t.Fatal("session survived with keepalives off: the middleboxes do not drop idle connections, so the test above proves nothing")
		}
	})
}

// TestNodeLostMidSession: the node under an open session dies; the user is
// told, and their next login lands elsewhere with a banner saying so.
func TestNodeLostMidSession(t *testing.T) {
	p := newPool(t, poolOptions{nodeBoxes: true})
	h := p.hold("alice")
	victim := p.node(h.node)
	victim.box.cut() // the VM's network is gone: connections drop, the port refuses
	victim.stop()
	if err := h.wait(15 * time.Second); err == nil {
		t.Fatal("ssh exited 0 when its node died")
	}
	if want := "poolgate: the connection to node " + victim.name + " was lost."; !strings.Contains(h.errb.String(), want) {
		t.Fatalf("stderr %q lacks %q", h.errb.String(), want)
	}
	p.waitFor(victim.name+" down", func() bool {
		for _, st := range p.gw.Balancer().Nodes() {
			if st.Name == victim.name {
				return st.State == balancer.StateDown
			}
		}
		return false
	})
	out, errs, code := p.sshCmd("alice", `echo "$DSVM_NODE"`)
	now := strings.TrimSpace(out)
	if code != 0 || now == victim.name {
		t.Fatalf("alice's next login: exit %d on %q, stderr %q", code, now, errs)
	}
	if want := fmt.Sprintf("node %s, where your sessions ran, is no longer available; you are now on node %s", victim.name, now); !strings.Contains(errs, want) {
		t.Fatalf("stderr %q lacks %q", errs, want)
	}
}

// TestAuthBackoff: 200 failed password logins from one address are
// answered ever more slowly; another address is not slowed.
func TestAuthBackoff(t *testing.T) {
	const maxDelay = 800 * time.Millisecond
	p := newPool(t, poolOptions{cfg: func(c *app.Config) {
		c.SSH.AuthBackoff.After = 5
		c.SSH.AuthBackoff.Delay = 50 * time.Millisecond
		c.SSH.AuthBackoff.MaxDelay = maxDelay
	}})
	// Each failed attempt's time, from the client's point of view, in the
	// order the gateway counted them (roughly: attempts run in parallel).
	type attempt struct {
		start time.Time
		took  time.Duration
	}
	var mu sync.Mutex
	var attempts []attempt
	tryConn := func(n int) {
		var last time.Time
		cfg := &ssh.ClientConfig{
			User: "pat", HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
			Auth: []ssh.AuthMethod{ssh.RetryableAuthMethod(ssh.PasswordCallback(func() (string, error) {
				now := time.Now()
				if !last.IsZero() {
					mu.Lock()
					attempts = append(attempts, attempt{last, now.Sub(last)})
					mu.Unlock()
				}
				last = now
				return "wrong-password", nil
			}), n)},
		}
		c, err := ssh.Dial("tcp", p.entry, cfg)
		if err == nil {
			c.Close()
			t.Error("wrong password logged in")
			return
		}
		if !last.IsZero() {
			mu.Lock()
			attempts = append(attempts, attempt{last, time.Since(last)})
			mu.Unlock()
		}
	}
	// Five in a row first (free), then 195 more over 39 connections, 13 at
	// a time.
	tryConn(5)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 13)
	for i := 0; i < 39; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); defer func() { <-sem }(); tryConn(5) }()
	}
	wg.Wait()
	sort.Slice(attempts, func(i, j int) bool { return attempts[i].start.Before(attempts[j].start) })
	if len(attempts) != 200 {
		t.Fatalf("%d failed attempts recorded, want 200", len(attempts))
	}
	first, late := attempts[0].took, attempts[150].took
	t.Logf("failed attempt 1 took %s, attempt 151 took %s", first, late)
	slow := 0
	for _, a := range attempts[100:] {
		if a.took >= maxDelay {
			slow++
		}
	}
	if first >= maxDelay || slow < 95 {
		t.Fatalf("attempt 1 took %s; of attempts 101-200, %d took at least %s (want ≥ 95)", first, slow, maxDelay)
	}

	// The real client: from 127.0.0.1 a wrong password is answered slowly;
	// from 127.0.0.5 it is not, and the right password is never delayed.
	sshpass := func(bind, password string) (time.Duration, int) {
		args := append([]string{"-p", password, "ssh"}, p.sshArgs("-p")...)
		args = append(args, "-b", bind, "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no", "pat@127.0.0.1", "true")
		cmd := exec.Command("sshpass", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		start := time.Now()
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return time.Since(start), code
	}
	slowTook, code1 := sshpass("127.0.0.1", "wrong")
	fastTook, code2 := sshpass("127.0.0.5", "wrong")
	okTook, code3 := sshpass("127.0.0.1", "pat-secret-1")
	t.Logf("wrong password from 127.0.0.1: %s; from 127.0.0.5: %s; right password from 127.0.0.1: %s", slowTook, fastTook, okTook)
	if code1 == 0 || code2 == 0 || code3 != 0 {
		t.Fatalf("exit codes %d %d %d, want failure, failure, success", code1, code2, code3)
	}
	if slowTook < maxDelay || fastTook >= maxDelay {
		t.Fatalf("wrong password from the failing address took %s, from another %s: want ≥ %s and < %s", slowTook, fastTook, maxDelay, maxDelay)
	}
}
