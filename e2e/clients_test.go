package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/gateway/sshgw"
	"github.com/poolgate/poolgate/internal/testutil"
)

// The clients users bring besides OpenSSH: PuTTY's plink and pscp,
// dropbear's dbclient, paramiko and asyncssh (pyclients_test.go), and git.
// Each one runs a command (exit status, stdout and stderr apart), copies a
// file both ways (checksums) and forwards a local port through the gateway.

// clientCommand prints to both streams and exits 3: each client must bring
// back "out-node-N" on stdout only, "to-stderr" on stderr only, and 3.
const clientCommand = `echo "out-$DSVM_NODE"; echo to-stderr >&2; exit 3`

// checkCommand checks what a client brought back from clientCommand.
func checkCommand(t *testing.T, client, out, errs string, code int) {
	t.Helper()
	if code != 3 || !strings.HasPrefix(out, "out-node-") || strings.Count(out, "\n") != 1 ||
		strings.Contains(out, "to-stderr") || !strings.Contains(errs, "to-stderr\n") {
		t.Fatalf("%s %q: exit %d, stdout %q, stderr %q; want 3, one line out-node-N, and to-stderr on stderr only",
			client, clientCommand, code, out, errs)
	}
}

// hostKey is the gateway's host public key, as clients must pin it.
func (p *pool) hostKey() ssh.PublicKey {
	p.t.Helper()
	keys, err := sshgw.LoadKeys(filepath.Join(p.dir, "state"))
	if err != nil {
		p.t.Fatal(err)
	}
	return keys.HostKey.PublicKey()
}

// port is the port clients connect to.
func (p *pool) port() string {
	_, port, _ := net.SplitHostPort(p.entry)
	return port
}

// knownHosts writes a known_hosts file holding only the gateway's host key
// under [127.0.0.1]:port (OpenSSH's form for a port other than 22) and
// returns its path; bare names it under 127.0.0.1 alone, as dbclient looks
// it up whatever the port.
func (p *pool) knownHosts(dir string, bare bool) string {
	p.t.Helper()
	host := "[127.0.0.1]:" + p.port()
	if bare {
		host = "127.0.0.1"
	}
	line := fmt.Sprintf("%s %s", host, ssh.MarshalAuthorizedKey(p.hostKey()))
	path := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// tool runs a client program with HOME set to home (so it reads and writes
// no configuration of the machine's user) and returns stdout, stderr and
// the exit status.
func tool(t *testing.T, home string, stdin io.Reader, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling tty: never prompt
	cmd.Env = append(os.Environ(), "HOME="+home, "PYTHONWARNINGS=ignore")
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out.String(), errb.String(), code
}

// forwarded starts a client that forwards local to target, checks that a
// connection to local gets the target's line, and stops the client.
func forwarded(t *testing.T, home, local, want string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = append(os.Environ(), "HOME="+home)
	var errb testutil.SyncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	var got string
	deadline := time.Now().Add(15 * time.Second)
	for got == "" && time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("%s exited before forwarding; stderr %q", name, errb.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", local, time.Second); err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(c)
			c.Close()
			got = string(b)
		}
		if got == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got != want {
		t.Fatalf("%s -L %s: read %q, want %q; stderr %q", name, local, got, want, errb.String())
	}
}

// copiedBothWays checks that src went up to the user's home as remote and
// came back as back, unchanged.
func copiedBothWays(t *testing.T, client, src, remote, back string) {
	t.Helper()
	want := fileSum(t, src)
	if got := fileSum(t, filepath.Join("/home/alice", remote)); got != want {
		t.Fatalf("%s upload: checksum %s, want %s", client, got, want)
	}
	if got := fileSum(t, back); got != want {
		t.Fatalf("%s download: checksum %s, want %s", client, got, want)
	}
}

// TestOtherClients: PuTTY, dropbear, paramiko, asyncssh and git work
// through the gateway in front of real sshd nodes.
func TestOtherClients(t *testing.T) {
	requirePeers(t, "plink", "pscp", "puttygen", "dbclient", "dropbearconvert", "sftp", "git", pythonPath)
	p := newPool(t, poolOptions{nodes: 2})
	home := t.TempDir()
	svc := testutil.ServeLine(t, "127.0.0.1:0", "hello from the node side\n")
	svcHost, svcPort, _ := net.SplitHostPort(svc)

	t.Run("plink and pscp", func(t *testing.T) {
		ppk := filepath.Join(t.TempDir(), "key.ppk")
		run(t, "puttygen", p.key, "-O", "private", "-o", ppk)
		putty := []string{"-batch", "-P", p.port(), "-i", ppk, "-hostkey", ssh.FingerprintSHA256(p.hostKey())}
		plink := append([]string{"-ssh"}, putty...)

		out, errs, code := tool(t, home, nil, "plink", append(plink, "alice@127.0.0.1", clientCommand)...)
		checkCommand(t, "plink", out, errs, code)

		src := randomFile(t, 8<<20)
		back := filepath.Join(t.TempDir(), "back.bin")
		remote := "poolgate-e2e-pscp.bin"
		t.Cleanup(func() { os.Remove("/home/alice/" + remote) })
		// Up over SFTP, down over the old scp protocol: pscp speaks both.
		if out, errs, code := tool(t, home, nil, "pscp", append(putty, "-q", "-sftp", src, "alice@127.0.0.1:"+remote)...); code != 0 {
			t.Fatalf("pscp -sftp upload: exit %d: %s %s", code, out, errs)
		}
		if out, errs, code := tool(t, home, nil, "pscp", append(putty, "-q", "-scp", "alice@127.0.0.1:"+remote, back)...); code != 0 {
			t.Fatalf("pscp -scp download: exit %d: %s %s", code, out, errs)
		}
		copiedBothWays(t, "pscp", src, remote, back)

		local := freePort(t)
		forwarded(t, home, local, "hello from the node side\n", "plink",
			append(plink, "-N", "-L", local+":"+svcHost+":"+svcPort, "alice@127.0.0.1")...)
	})

	t.Run("dbclient", func(t *testing.T) {
		dir := t.TempDir()
		dbKey := filepath.Join(dir, "key.db")
		run(t, "dropbearconvert", "openssh", "dropbear", p.key, dbKey)
		// dbclient checks the host key against ~/.ssh/known_hosts.
		dbHome := filepath.Join(dir, "home")
		if err := os.MkdirAll(filepath.Join(dbHome, ".ssh"), 0o700); err != nil {
			t.Fatal(err)
		}
		p.knownHosts(filepath.Join(dbHome, ".ssh"), true)
		db := []string{"-p", p.port(), "-i", dbKey}

		out, errs, code := tool(t, dbHome, nil, "dbclient", append(db, "alice@127.0.0.1", clientCommand)...)
		checkCommand(t, "dbclient", out, errs, code)

		// OpenSSH's sftp over dbclient's connection (-S): dbclient carries
		// the sftp subsystem.
		wrapper := filepath.Join(dir, "dbclient-sftp")
		script := fmt.Sprintf("#!/bin/sh\nexec dbclient %s -s alice@127.0.0.1 sftp\n", strings.Join(db, " "))
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		src := randomFile(t, 8<<20)
		back := filepath.Join(dir, "back.bin")
		remote := "poolgate-e2e-dbclient.bin"
		t.Cleanup(func() { os.Remove("/home/alice/" + remote) })
		batch := filepath.Join(dir, "batch")
		os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\n", src, remote, remote, back)), 0o644)
		if out, errs, code := tool(t, dbHome, nil, "sftp", "-S", wrapper, "-b", batch, "alice@127.0.0.1"); code != 0 {
			t.Fatalf("sftp -S dbclient: exit %d: %s %s", code, out, errs)
		}
		copiedBothWays(t, "sftp over dbclient", src, remote, back)

		local := freePort(t)
		forwarded(t, dbHome, local, "hello from the node side\n", "dbclient",
			append(db, "-N", "-L", local+":"+svcHost+":"+svcPort, "alice@127.0.0.1")...)
	})

	t.Run("paramiko", func(t *testing.T) { pythonClient(t, p, home, "paramiko", paramikoScript, svcHost, svcPort) })
	t.Run("asyncssh", func(t *testing.T) { pythonClient(t, p, home, "asyncssh", asyncsshScript, svcHost, svcPort) })

	t.Run("git push and clone over ssh", func(t *testing.T) {
		repo := "/home/alice/poolgate-e2e.git"
		os.RemoveAll(repo)
		t.Cleanup(func() { os.RemoveAll(repo) })
		run(t, "git", "init", "-q", "--bare", repo)
		run(t, "chown", "-R", "alice:", repo)

		dir := t.TempDir()
		sshCmd := "ssh " + strings.Join(append(p.sshArgs("-p"), "-o", "BatchMode=yes"), " ")
		git := func(wd string, args ...string) string {
			t.Helper()
			cmd := exec.Command("git", append([]string{"-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "-c", "init.defaultBranch=main"}, args...)...)
			cmd.Dir = wd
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			cmd.Env = append(os.Environ(), "HOME="+home, "GIT_SSH_COMMAND="+sshCmd, "GIT_TERMINAL_PROMPT=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		url := "ssh://alice@127.0.0.1:" + p.port() + repo
		work := filepath.Join(dir, "work")
		git(dir, "clone", "-q", url, work)
		content := fmt.Sprintf("pushed through poolgate at %s\n", time.Now().Format(time.RFC3339Nano))
		os.WriteFile(filepath.Join(work, "README"), []byte(content), 0o644)
		git(work, "add", "README")
		git(work, "commit", "-q", "-m", "first")
		git(work, "push", "-q", "origin", "HEAD:main")
		again := filepath.Join(dir, "again")
		git(dir, "clone", "-q", "--branch", "main", url, again)
		if got, _ := os.ReadFile(filepath.Join(again, "README")); string(got) != content {
			t.Fatalf("cloned README %q, want %q", got, content)
		}
	})
}
