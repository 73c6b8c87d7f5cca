package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testutil"
)

// TestSIGTERMTellsEverySession: SIGTERM arrives while 20 users are logging
// in. Each of them is told the gateway is shutting down, and every session
// the gateway counted has its "started" and "ended" log lines.
func TestSIGTERMTellsEverySession(t *testing.T) {
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
		os.MkdirAll(filepath.Join(dir, "keys", u), 0o755)
		os.WriteFile(filepath.Join(dir, "keys", u, "authorized_keys"), pub, 0o644)
	}
	listen := freePort(t)
	conf := filepath.Join(dir, "poolgate.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`state_dir: %s/state
shutdown_timeout: 3s
ssh:
  listen: %s
  authorized_keys: %s/keys/{user}/authorized_keys
admin:
  listen: %s
health:
  interval: 200ms
discovery:
  static:
    - name: node-1
      ssh: 127.0.0.2:2222
    - name: node-2
      ssh: 127.0.0.3:2222
`, dir, listen, dir, freePort(t))), 0o644)
	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	os.WriteFile(caFile, []byte(run(t, bin, "ca-pubkey", "--config", conf)), 0o644)
	startNode(t, "node-1", "127.0.0.2", caFile)
	startNode(t, "node-2", "127.0.0.3", caFile)

	proc := startServe(t, bin, conf, listen)
	srv, exited, logs := proc.cmd, proc.exited, &proc.logs
	_, port, _ := net.SplitHostPort(listen)
	base := func() []string {
		// LogLevel first (the first value wins): VERBOSE shows
		// "Authenticated to", and INFO and up the gateway's notices.
		return append([]string{"-o", "LogLevel=VERBOSE", "-o", "BatchMode=yes"}, clientArgs(dir, key, listen, "-p")...)
	}
	testutil.Eventually(t, 10*time.Second, "a first login through poolgate serve", func() bool {
		c := exec.Command("ssh", append(base(), "carol@127.0.0.1", "true")...)
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		return c.Run() == nil
	})
	startedAtFirst := strings.Count(logs.String(), `"msg":"ssh session started"`)

	const n = 20
	type client struct {
		cmd  *exec.Cmd
		errb testutil.SyncBuffer
		done chan struct{}
	}
	clients := make([]*client, n)
	for i := range clients {
		c := &client{done: make(chan struct{})}
		c.cmd = exec.Command("ssh", append(base(), testUsers[i%len(testUsers)]+"@127.0.0.1", "echo ready; sleep 30")...)
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		c.cmd.Stderr = &c.errb
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = c.cmd.Wait(); close(c.done) }()
		t.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.done })
		clients[i] = c
	}
	// Every client has its TCP connection to the gateway, and a few
	// sessions have started: the others are logging in.
	testutil.Eventually(t, 15*time.Second, fmt.Sprintf("%d connections to the gateway", n), func() bool {
		return establishedTo(t, port) >= n
	})
	testutil.Eventually(t, 15*time.Second, "the first sessions to start", func() bool {
		return strings.Count(logs.String(), `"msg":"ssh session started"`)-startedAtFirst >= 3
	})
	startedBefore := strings.Count(logs.String(), `"msg":"ssh session started"`) - startedAtFirst
	_ = srv.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		t.Logf("poolgate serve exited: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("poolgate serve still running 15s after SIGTERM")
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-c.done:
			case <-time.After(15 * time.Second):
				_ = c.cmd.Process.Kill()
				<-c.done
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of %d sessions had started when SIGTERM was sent", startedBefore, n)
	if startedBefore >= n {
		t.Fatal("every session had started before SIGTERM: the test did not catch logins in flight")
	}

	authenticated := 0
	for i, c := range clients {
		errs := c.errb.String()
		if strings.Contains(errs, "Authenticated to ") {
			authenticated++
		}
		if !strings.Contains(errs, "poolgate: the gateway is shutting down") {
			t.Errorf("client %d (%s) was not told the gateway is shutting down; its stderr:\n%s", i, testUsers[i%len(testUsers)], errs)
		}
	}

	// Each session the gateway counted logged its start and its end.
	started, ended := map[uint64]bool{}, map[uint64]bool{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var l struct {
			Msg       string `json:"msg"`
			SessionID uint64 `json:"session_id"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Msg {
		case "ssh session started":
			started[l.SessionID] = true
		case "ssh session ended":
			ended[l.SessionID] = true
		}
	}
	for id := range started {
		if !ended[id] {
			t.Errorf("session %d has an \"ssh session started\" log line and no \"ssh session ended\"", id)
		}
	}
	if got := len(started) - startedAtFirst; got < authenticated {
		t.Errorf("%d clients were authenticated by the gateway (each one a counted session), but only %d have an \"ssh session started\" log line", authenticated, got)
	}
}

// establishedTo counts the established TCP connections whose local port is
// port: the gateway's side of its clients' connections.
func establishedTo(t *testing.T, port string) int {
	t.Helper()
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X", p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st ...
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "01" {
			n++
		}
	}
	return n
}
