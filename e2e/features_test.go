package e2e

import (
	"bufio"
	"crypto/rand"
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

	"github.com/poolgate/poolgate/internal/testutil"
)

func randomFile(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenSSHFeatures: the tools users move onto the pool address work
// through the gateway as they do directly.
func TestOpenSSHFeatures(t *testing.T) {
	requirePeers(t, "sftp", "rsync", "ssh-agent", "ssh-add", "xauth", "bash")
	p := newPool(t, poolOptions{})

	t.Run("sftp batch upload and download", func(t *testing.T) {
		src := randomFile(t, 20<<20)
		back := filepath.Join(t.TempDir(), "back.bin")
		remote := "poolgate-e2e-sftp.bin"
		t.Cleanup(func() { os.Remove("/home/alice/" + remote) })
		batch := filepath.Join(t.TempDir(), "batch")
		os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\nls -l %s\n", src, remote, remote, back, remote)), 0o644)
		args := append(p.sshArgs("-P"), "-o", "BatchMode=yes", "-b", batch, "alice@127.0.0.1")
		out, errs, code := p.runClient("sftp", args, nil)
		if code != 0 {
			t.Fatalf("sftp -b: exit %d\n%s\n%s", code, out, errs)
		}
		if fileSum(t, back) != fileSum(t, src) || fileSum(t, "/home/alice/"+remote) != fileSum(t, src) {
			t.Fatal("sftp copies differ from the source")
		}
	})

	t.Run("rsync 200 MB both ways", func(t *testing.T) {
		src := randomFile(t, 200<<20)
		back := filepath.Join(t.TempDir(), "back.bin")
		remote := "poolgate-e2e-rsync.bin"
		t.Cleanup(func() { os.Remove("/home/alice/" + remote) })
		sshCmd := "ssh " + strings.Join(append(p.sshArgs("-p"), "-o", "BatchMode=yes"), " ")
		for _, pair := range [][2]string{{src, "alice@127.0.0.1:" + remote}, {"alice@127.0.0.1:" + remote, back}} {
			out, errs, code := p.runClient("rsync", []string{"-a", "-e", sshCmd, pair[0], pair[1]}, nil)
			if code != 0 {
				t.Fatalf("rsync %s %s: exit %d\n%s\n%s", pair[0], pair[1], code, out, errs)
			}
		}
		want := fileSum(t, src)
		if fileSum(t, "/home/alice/"+remote) != want || fileSum(t, back) != want {
			t.Fatal("rsync copies differ from the source")
		}
	})

	t.Run("ssh -L reaches a service on the node's loopback", func(t *testing.T) {
		svc := testutil.ServeLine(t, "127.0.0.1:0", "hello from the node side\n")
		_, svcPort, _ := net.SplitHostPort(svc)
		local := freePort(t)
		args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
			"-L", local+":localhost:"+svcPort, "alice@127.0.0.1", "sleep 30")
		cmd := exec.Command("ssh", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		var got string
		testutil.Eventually(t, 10*time.Second, "an answer through -L", func() bool {
			c, err := net.Dial("tcp", local)
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(c)
			c.Close()
			got = string(b)
			return got != ""
		})
		if got != "hello from the node side\n" {
			t.Fatalf("through -L: %q", got)
		}
	})

	t.Run("ssh -R exposes a client port to the node", func(t *testing.T) {
		svc := testutil.ServeLine(t, "127.0.0.1:0", "hello from the client side\n")
		remotePort := strings.TrimPrefix(freePort(t), "127.0.0.1:")
		args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
			"-R", "127.0.0.1:"+remotePort+":"+svc, "alice@127.0.0.1",
			"bash -c 'exec 3<>/dev/tcp/127.0.0.1/"+remotePort+"; cat <&3'")
		out, errs, code := p.runClient("ssh", args, nil)
		if code != 0 || out != "hello from the client side\n" {
			t.Fatalf("through -R: exit %d, %q, stderr %q", code, out, errs)
		}
	})

	t.Run("ssh -A lets the node use the client's agent", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "agent.sock")
		agent := exec.Command("ssh-agent", "-D", "-a", sock)
		if err := agent.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { agent.Process.Kill(); agent.Wait() }()
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		add := exec.Command("ssh-add", p.key)
		add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add: %v %s", err, out)
		}
		fp := strings.Fields(run(t, "ssh-keygen", "-lf", p.key+".pub"))[1]
		args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "-A", "alice@127.0.0.1", "ssh-add -l")
		cmd := exec.Command("ssh", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), fp) {
			t.Fatalf("ssh -A 'ssh-add -l': %v, %q; want %s listed", err, out, fp)
		}
	})

	t.Run("SetEnv reaches the node as its sshd allows", func(t *testing.T) {
		args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "-o", "SetEnv=POOLGATE_TEST=hello OTHER_TEST=nope",
			"alice@127.0.0.1", `echo "[$POOLGATE_TEST][$OTHER_TEST]"`)
		out, errs, code := p.runClient("ssh", args, nil)
		if code != 0 || out != "[hello][]\n" {
			t.Fatalf("SetEnv: exit %d, %q, stderr %q (AcceptEnv POOLGATE_* only)", code, out, errs)
		}
	})

	t.Run("X11 request reaches the node", func(t *testing.T) {
		args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "-Y", "alice@127.0.0.1", `echo "DISPLAY=$DISPLAY"`)
		cmd := exec.Command("ssh", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		cmd.Env = append(os.Environ(), "DISPLAY=:97", "XAUTHORITY="+filepath.Join(t.TempDir(), "xauth"))
		out, err := cmd.Output()
		if err != nil || !strings.HasPrefix(string(out), "DISPLAY=localhost:1") {
			t.Fatalf("ssh -Y: %v, %q; want the node's forwarded DISPLAY", err, out)
		}
	})
}

// readLine reads one line with a deadline.
func readLine(r *bufio.Reader, d time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := r.ReadString('\n'); ch <- res{s, err} }()
	select {
	case x := <-ch:
		return x.s, x.err
	case <-time.After(d):
		return "", fmt.Errorf("no line within %s", d)
	}
}
