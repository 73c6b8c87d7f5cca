package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testutil"
)

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
	errb  testutil.SyncBuffer
}

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
