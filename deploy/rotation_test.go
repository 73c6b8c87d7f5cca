package deploy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSSHDTrustsBothCALines: during a CA rotation, a real sshd with the
// CA file the nodes' cloud-init writes (gatewayCaPublicKey and
// gatewayPreviousCaPublicKey) accepts certificates of either CA, and of
// no other.
func TestSSHDTrustsBothCALines(t *testing.T) {
	sshd := requireTool(t, "sshd")
	ssh := requireTool(t, "ssh")
	keygen := requireTool(t, "ssh-keygen")
	if os.Geteuid() != 0 {
		msg := "sshd must run as root to log a user in"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + " (skipped because CI is unset; with CI set this fails)")
	}
	dir := t.TempDir()
	gen := func(name, typ string) string {
		path := filepath.Join(dir, name)
		if out, err := exec.Command(keygen, "-q", "-t", typ, "-N", "", "-C", name, "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
		b, _ := os.ReadFile(path + ".pub")
		return strings.TrimSpace(string(b))
	}
	newCA, oldCA := gen("new-ca", "ecdsa"), gen("old-ca", "ed25519")
	gen("other-ca", "ed25519")
	gen("host", "ed25519")
	gen("user", "ed25519")

	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": newCA, "gatewayPreviousCaPublicKey": oldCA}), defaultWorld())
	caFile := filepath.Join(dir, "poolgate_user_ca.pub")
	content := writeFiles(t, customData(t, ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]))["/etc/ssh/poolgate_user_ca.pub"]
	if err := os.WriteFile(caFile, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	_ = os.MkdirAll("/run/sshd", 0o755)
	cmd := exec.Command(sshd, "-D", "-e", "-f", "/dev/null", "-p", fmt.Sprint(port),
		"-o", "ListenAddress=127.0.0.1", "-h", filepath.Join(dir, "host"),
		"-o", "TrustedUserCAKeys="+caFile, "-o", "AuthorizedKeysFile=none",
		"-o", "PermitRootLogin=yes", "-o", "PidFile=none", "-o", "StrictModes=no")
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	login := func(ca string) error {
		user := filepath.Join(dir, "user")
		_ = os.Remove(user + "-cert.pub")
		if out, err := exec.Command(keygen, "-q", "-s", filepath.Join(dir, ca), "-I", "test", "-n", "root", "-V", "-5m:+5m", user+".pub").CombinedOutput(); err != nil {
			t.Fatalf("signing with %s: %v %s", ca, err, out)
		}
		out, err := exec.Command(ssh, "-F", "/dev/null", "-p", fmt.Sprint(port), "-i", user, "-o", "CertificateFile="+user+"-cert.pub",
			"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "LogLevel=ERROR", "root@127.0.0.1", "echo", "in").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) != "in" {
			return fmt.Errorf("output %q", out)
		}
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	for _, ca := range []string{"new-ca", "old-ca"} {
		if err := login(ca); err != nil {
			t.Errorf("a certificate of %s is refused with both CA lines: %v\nsshd: %s", ca, err, log.String())
		}
	}
	if err := login("other-ca"); err == nil {
		t.Error("a certificate of an untrusted CA was accepted")
	}
}
