package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testutil"
)

// TestUpgradeKeepsSessions: SIGUSR2 to poolgate serve while alice has an
// ssh session open that waits on its stdin. The new process takes the
// listeners, logins go on succeeding throughout, its admin API lists
// alice's session (relayed by the old process) and places bob by that
// count; alice's session then ends with its output and exit status
// intact, the old process exits 0 and the new one serves on.
func TestUpgradeKeepsSessions(t *testing.T) {
	requirePeers(t, sshdPath, "ssh", "ssh-keygen", "useradd")
	for _, u := range []string{"alice", "bob", "carol"} {
		ensureUser(t, u, "")
	}
	t.Cleanup(func() { reapOrphans(t) })
	bin := buildPoolgate(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	pub, _ := os.ReadFile(key + ".pub")
	for _, u := range []string{"alice", "bob", "carol"} {
		os.MkdirAll(filepath.Join(dir, "keys", u), 0o755)
		os.WriteFile(filepath.Join(dir, "keys", u, "authorized_keys"), pub, 0o644)
	}
	listen, adminAddr := freePort(t), freePort(t)
	conf := filepath.Join(dir, "poolgate.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`state_dir: %s/state
shutdown_timeout: 3s
upgrade_timeout: 2m
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
`, dir, listen, dir, adminAddr)), 0o644)
	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	os.WriteFile(caFile, []byte(run(t, bin, "ca-pubkey", "--config", conf)), 0o644)
	startNode(t, "node-1", "127.0.0.2", caFile)
	startNode(t, "node-2", "127.0.0.3", caFile)

	// The log is a file, not a pipe: the new process inherits it and
	// outlives the old one, as with journald's socket.
	logPath := filepath.Join(dir, "serve.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logs := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	old := exec.Command(bin, "serve", "--config", conf)
	old.Stdout, old.Stderr = logFile, logFile
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	oldExited := make(chan error, 1)
	go func() { oldExited <- old.Wait() }()
	newPID := 0
	t.Cleanup(func() {
		if old.ProcessState == nil {
			old.Process.Kill()
			<-oldExited
		}
		if newPID > 0 {
			syscall.Kill(newPID, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("poolgate serve's log (both processes):\n%s", logs())
		}
	})

	sshArgs := func(user string, cmd ...string) []string {
		return append(append([]string{"-o", "BatchMode=yes"}, clientArgs(dir, key, listen, "-p")...), append([]string{user + "@127.0.0.1"}, cmd...)...)
	}
	sshRun := func(user, cmd string) (string, error) {
		c := exec.Command("ssh", sshArgs(user, cmd)...)
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		var errb bytes.Buffer
		c.Stderr = &errb
		out, err := c.Output()
		if err != nil {
			return string(out), fmt.Errorf("%v: %s", err, errb.String())
		}
		return string(out), nil
	}
	testutil.Eventually(t, 15*time.Second, "a first login through poolgate serve", func() bool {
		_, err := sshRun("carol", "true")
		return err == nil
	})

	// alice's session: it prints, waits for a line on stdin, answers and
	// exits 7.
	alice := exec.Command("ssh", sshArgs("alice", `echo "on $DSVM_NODE"; read line; echo "got $line"; exit 7`)...)
	alice.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	aliceIn, _ := alice.StdinPipe()
	aliceOut, _ := alice.StdoutPipe()
	var aliceErr testutil.SyncBuffer
	alice.Stderr = &aliceErr
	if err := alice.Start(); err != nil {
		t.Fatal(err)
	}
	aliceDone := make(chan error, 1)
	go func() { aliceDone <- alice.Wait() }()
	t.Cleanup(func() {
		if alice.ProcessState == nil {
			alice.Process.Kill()
			<-aliceDone
		}
	})
	outR := bufio.NewReader(aliceOut)
	first, err := outR.ReadString('\n')
	if err != nil {
		t.Fatalf("alice's first line: %v (stderr: %s)", err, aliceErr.String())
	}
	aliceNode := strings.TrimSpace(strings.TrimPrefix(first, "on "))
	if aliceNode != "node-1" && aliceNode != "node-2" {
		t.Fatalf("alice's first line %q", first)
	}

	// Logins go on throughout the upgrade; each must succeed.
	var logins, failed atomic.Int64
	var failures testutil.SyncBuffer
	stopLogins := make(chan struct{})
	var loginsWG sync.WaitGroup
	loginsWG.Go(func() {
		for {
			select {
			case <-stopLogins:
				return
			default:
			}
			if _, err := sshRun("carol", "true"); err != nil {
				failed.Add(1)
				fmt.Fprintf(&failures, "%v\n", err)
			}
			logins.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
	})
	time.Sleep(300 * time.Millisecond)

	// An upgrade whose new process cannot start (a broken config file)
	// changes nothing.
	good, _ := os.ReadFile(conf)
	os.WriteFile(conf, bytes.Replace(good, []byte("upgrade_timeout: 2m"), []byte("upgrade_timeout: -1s"), 1), 0o644)
	if err := old.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the failed upgrade's log line", func() bool {
		return strings.Contains(logs(), "upgrade: failed; this process serves on as before")
	})
	if !strings.Contains(logs(), "upgrade_timeout: must be positive") {
		t.Error("the new process's log does not say why it failed")
	}
	os.WriteFile(conf, good, 0o644)

	// The new binary replaces the file the old one was started from, as
	// an install does (a rename: the running file is left alone).
	next := filepath.Join(dir, "poolgate.next")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=upgrade-v2", "-o", next, "../cmd/poolgate").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Rename(next, bin); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	sent := time.Now()
	if err := old.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the new process's ready line", func() bool {
		return strings.Contains(logs(), "upgrade: took over listeners")
	})
	t.Logf("the new process took over %s after SIGUSR2", time.Since(sent).Round(time.Millisecond))
	newPID = logField[int](t, logs(), "upgrade: new process", "pid")
	if !strings.Contains(logs(), `"version":"upgrade-v2"`) {
		t.Error("the new process is not the binary now at the path (version upgrade-v2)")
	}
	if newPID == 0 || newPID == old.Process.Pid {
		t.Fatalf("new process PID %d", newPID)
	}
	// alice's and carol's pins; alice's session, and carol's if one of
	// her logins was under way.
	pins, adopted := logField[int](t, logs(), "upgrade: took over listeners", "pins"), logField[int](t, logs(), "upgrade: took over listeners", "sessions")
	if pins != 2 || adopted < 1 {
		t.Errorf("the new process adopted %d pins and %d sessions, want alice's and carol's pins and at least alice's session; log:\n%s", pins, adopted, grepLines(logs(), "upgrade:"))
	}
	if kept := logField[int](t, logs(), "upgrade: new process", "sessions"); kept < 1 {
		t.Errorf("the old process says it keeps %d sessions, want at least alice's", kept)
	}
	time.Sleep(time.Second) // more logins, through the new process
	// carol's logins stop here, so that bob is placed by alice's session
	// alone.
	close(stopLogins)
	loginsWG.Wait()
	t.Logf("%d logins during the upgrade, %d failed", logins.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("logins failed during the upgrade:\n%s", failures.String())
	}

	// The new process's admin API lists alice's session.
	var sessions struct {
		Sessions []struct{ User, Node string } `json:"sessions"`
	}
	getJSON(t, "http://"+adminAddr+"/api/sessions", &sessions)
	found := false
	for _, s := range sessions.Sessions {
		if s.User == "alice" && s.Node == aliceNode {
			found = true
		}
	}
	if !found {
		t.Errorf("the new process's /api/sessions lacks alice's session on %s: %+v", aliceNode, sessions.Sessions)
	}
	testutil.Eventually(t, 5*time.Second, "carol's sessions to end, alice's alone left", func() bool {
		getJSON(t, "http://"+adminAddr+"/api/sessions", &sessions)
		return len(sessions.Sessions) == 1
	})
	// bob goes to the other node (alice's adopted session counts there),
	// and alice's next login to hers (her pin carried across).
	other := map[string]string{"node-1": "node-2", "node-2": "node-1"}[aliceNode]
	if out, err := sshRun("bob", "echo $DSVM_NODE"); err != nil || strings.TrimSpace(out) != other {
		t.Errorf("bob's login after the upgrade: %q, %v; want %s (alice's session counts on %s)", out, err, other, aliceNode)
	}
	if out, err := sshRun("alice", "echo $DSVM_NODE"); err != nil || strings.TrimSpace(out) != aliceNode {
		t.Errorf("alice's second login after the upgrade: %q, %v; want %s (her pin)", out, err, aliceNode)
	}
	select {
	case err := <-oldExited:
		t.Fatalf("the old process exited while alice's session was open: %v", err)
	default:
	}

	// alice's session ends as it would have without the upgrade.
	fmt.Fprintln(aliceIn, "hello")
	aliceIn.Close()
	rest, _ := io.ReadAll(outR)
	err = <-aliceDone
	if string(rest) != "got hello\n" {
		t.Errorf("alice's output after the upgrade: %q, want %q (stderr: %s)", rest, "got hello\n", aliceErr.String())
	}
	if code := exitCode(err); code != 7 {
		t.Errorf("alice's exit status %d (%v), want 7", code, err)
	}
	if strings.Contains(aliceErr.String(), "shutting down") {
		t.Errorf("alice was told the gateway is shutting down: %s", aliceErr.String())
	}
	select {
	case err := <-oldExited:
		if err != nil {
			t.Errorf("the old process exited with %v, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the old process still runs 15s after its last session ended")
	}
	if !strings.Contains(logs(), "upgrade: last session ended; exiting") {
		t.Error("the old process did not log its last session")
	}

	// The new process serves on, and counts alice's ended session no more.
	if _, err := sshRun("carol", "true"); err != nil {
		t.Errorf("a login after the old process exited: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "alice's adopted session to be released", func() bool {
		getJSON(t, "http://"+adminAddr+"/api/sessions", &sessions)
		return len(sessions.Sessions) == 0
	})
	if err := syscall.Kill(newPID, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to the new process: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "the new process to stop on SIGTERM", func() bool {
		return strings.Contains(logs(), `"msg":"shutting down"`) && !processRuns(newPID)
	})
	newPID = 0
}

// logField is field of the first JSON log line whose msg starts with
// prefix.
func logField[T any](t *testing.T, logs, prefix, field string) T {
	t.Helper()
	var zero T
	for _, line := range strings.Split(logs, "\n") {
		var l map[string]json.RawMessage
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		var msg string
		_ = json.Unmarshal(l["msg"], &msg)
		if !strings.HasPrefix(msg, prefix) {
			continue
		}
		var v T
		if err := json.Unmarshal(l[field], &v); err != nil {
			t.Fatalf("log line %q: field %s: %v", line, field, err)
		}
		return v
	}
	return zero
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// processRuns reports whether pid is a live process (not a zombie).
func processRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}
