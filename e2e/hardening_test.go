package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// The acceptance checks of issue 14 (SSH correctness and hardening) that
// need real clients: exit codes through multiplexing and plink, the
// key-only refusal line, the offered algorithms, bad banners, and the
// pre-auth slots of one address.

// TestExitCodesThroughFastClosers: OpenSSH multiplexing and plink close
// the channel as soon as output ends; the exit status must already be
// there, every time.
func TestExitCodesThroughFastClosers(t *testing.T) {
	requirePeers(t, "plink", "puttygen")
	p := newPool(t, poolOptions{nodes: 1})

	t.Run("100 multiplexed exit 3", func(t *testing.T) {
		// A short directory: a socket path has at most 107 bytes.
		dir, err := os.MkdirTemp("", "cm")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		cm := "ControlPath=" + filepath.Join(dir, "cm")
		// The master runs in the foreground (-N without -f) so that this
		// test owns its PID and stops it; -f would only fork it away.
		master := exec.Command("ssh", append(append(p.sshArgs("-p"), "-N", "-o", "BatchMode=yes", "-o", "ControlMaster=yes", "-o", cm), "alice@127.0.0.1")...)
		master.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := master.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = master.Process.Kill(); _ = master.Wait() })
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, _, code := p.runClient("ssh", append(p.sshArgs("-p"), "-o", cm, "-O", "check", "alice@127.0.0.1"), nil); code == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the ControlMaster did not come up within 15s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		wrong := map[int]int{}
		for i := 0; i < 100; i++ {
			args := append(p.sshArgs("-p"), "-o", "BatchMode=yes", "-o", cm, "-o", "ControlMaster=no", "alice@127.0.0.1", "exit 3")
			if _, _, code := p.runClient("ssh", args, nil); code != 3 {
				wrong[code]++
			}
		}
		if len(wrong) > 0 {
			t.Fatalf("of 100 'exit 3' through a ControlMaster, these came back otherwise (exit code: runs): %v", wrong)
		}
	})

	t.Run("50 plink false", func(t *testing.T) {
		ppk := filepath.Join(t.TempDir(), "key.ppk")
		run(t, "puttygen", p.key, "-O", "private", "-o", ppk)
		home := t.TempDir()
		wrong := map[int]int{}
		for i := 0; i < 50; i++ {
			_, _, code := tool(t, home, nil, "plink", "-ssh", "-batch", "-P", p.port(), "-i", ppk,
				"-hostkey", ssh.FingerprintSHA256(p.hostKey()), "alice@127.0.0.1", "false")
			if code != 1 {
				wrong[code]++
			}
		}
		if len(wrong) > 0 {
			t.Fatalf("of 50 plink 'false', these came back otherwise (exit code: runs): %v", wrong)
		}
	})
}

// TestKeyOnlyRefusalSaysWhy: a client that offers keys only (BatchMode,
// as scripts and git do) and is refused sees a poolgate: line, the same
// for a user that exists and one that does not.
func TestKeyOnlyRefusalSaysWhy(t *testing.T) {
	p := newPool(t, poolOptions{nodes: 1})
	wrongKey := filepath.Join(t.TempDir(), "wrong")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", wrongKey)
	lines := map[string]string{}
	for _, user := range []string{"alice", "nosuchuser"} {
		// LogLevel first: OpenSSH takes the first value of an option, and
		// hides banners below INFO.
		args := append([]string{"-o", "LogLevel=INFO", "-o", "BatchMode=yes"}, clientArgs(p.dir, wrongKey, p.entry, "-p")...)
		_, errs, code := p.runClient("ssh", append(args, user+"@127.0.0.1", "true"), nil)
		var pg []string
		for _, l := range strings.Split(errs, "\n") {
			if strings.HasPrefix(l, "poolgate:") {
				pg = append(pg, l)
			}
		}
		if code != 255 || len(pg) == 0 {
			t.Fatalf("ssh -o BatchMode=yes -i wrong_key %s@gw: exit %d, stderr %q; want 255 and a line starting poolgate:", user, code, errs)
		}
		lines[user] = strings.ReplaceAll(strings.Join(pg, "\n"), user, "USER")
	}
	if lines["alice"] != lines["nosuchuser"] {
		t.Fatalf("the refusal tells an existing user from an unknown one:\nalice:      %q\nnosuchuser: %q", lines["alice"], lines["nosuchuser"])
	}
}

// TestOfferedAlgorithms: ssh-audit finds none of the SHA-1 algorithms
// current OpenSSH dropped, and a post-quantum key exchange.
func TestOfferedAlgorithms(t *testing.T) {
	requirePeers(t, "ssh-audit")
	p := newPool(t, poolOptions{nodes: 1})
	home := t.TempDir()
	out, errs, _ := tool(t, home, nil, "ssh-audit", "-j", "-p", p.port(), "127.0.0.1")
	var audit struct {
		Kex []struct{ Algorithm string } `json:"kex"`
		Key []struct{ Algorithm string } `json:"key"`
		Enc []string                     `json:"enc"`
		MAC []string                     `json:"mac"`
	}
	if err := json.Unmarshal([]byte(out), &audit); err != nil || len(audit.Kex) == 0 {
		t.Fatalf("ssh-audit -j: %v; stdout %q, stderr %q", err, out, errs)
	}
	offered := map[string][]string{"enc": audit.Enc, "mac": audit.MAC}
	for _, k := range audit.Kex {
		offered["kex"] = append(offered["kex"], k.Algorithm)
	}
	for _, k := range audit.Key {
		offered["key"] = append(offered["key"], k.Algorithm)
	}
	t.Logf("offered: %v", offered)

	banned := map[string]bool{"diffie-hellman-group14-sha1": true, "diffie-hellman-group1-sha1": true,
		"diffie-hellman-group-exchange-sha1": true, "hmac-sha1-96": true, "hmac-sha1-96-etm@openssh.com": true}
	// ssh-audit's own verdicts (-l fail: failures only), for the SHA-1
	// ones among them: hmac-sha1, ssh-rsa signatures.
	failed, _, _ := tool(t, home, nil, "ssh-audit", "-b", "-n", "-l", "fail", "-p", p.port(), "127.0.0.1")
	for _, line := range strings.Split(failed, "\n") {
		// "(mac) hmac-sha1 -- [fail] using weak hashing algorithm"
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[0], "(") && strings.Contains(line, "[fail]") {
			t.Logf("ssh-audit fails %s %s", f[0], f[1])
			if strings.Contains(f[1], "sha1") || f[1] == "ssh-rsa" {
				banned[f[1]] = true
			}
		}
	}
	var bad []string
	for kind, algs := range offered {
		for _, a := range algs {
			if banned[a] {
				bad = append(bad, kind+" "+a)
			}
		}
	}
	slices.Sort(bad)
	if len(bad) > 0 {
		t.Errorf("the gateway offers %v", bad)
	}
	if !slices.ContainsFunc(offered["kex"], func(a string) bool {
		return a == "mlkem768x25519-sha256" || strings.HasPrefix(a, "sntrup761x25519-sha512")
	}) {
		t.Errorf("no post-quantum key exchange offered (mlkem768x25519-sha256 or sntrup761x25519-sha512): %v", offered["kex"])
	}
}

// TestBadBannersClosedAtOnce: a client that sends an SSH-1 version or a
// line that is not SSH is dropped within a second, as sshd does, instead
// of holding a pre-auth slot for the login grace time.
func TestBadBannersClosedAtOnce(t *testing.T) {
	p := newPool(t, poolOptions{nodes: 1})
	for _, line := range []string{"SSH-1.5-Old\r\n", "GET / HTTP/1.1\r\n"} {
		t.Run(strings.TrimSpace(line), func(t *testing.T) {
			c, err := net.Dial("tcp", p.entry)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			if v, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(v, "SSH-2.0-") {
				t.Fatalf("gateway's version line %q, %v", v, err)
			}
			if _, err := c.Write([]byte(line)); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			_ = c.SetReadDeadline(sent.Add(time.Second))
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("after %q the gateway still held the connection open 1s later (read %d bytes)", line, n)
				}
				t.Logf("connection ended with %v (a reset counts as closed)", err)
			}
			t.Logf("after %q the gateway closed the connection in %s (sent %d bytes first)", line, time.Since(sent).Round(time.Millisecond), n)
		})
	}
}

// TestOneAddressCannotFillPreAuthSlots: while 300 silent TCP connections
// come from 127.0.0.1, a user from 127.0.0.5 still logs in.
func TestOneAddressCannotFillPreAuthSlots(t *testing.T) {
	p := newPool(t, poolOptions{nodes: 1})
	held, refused := silentConns(t, p.entry, 300, func(int) net.IP { return net.IPv4(127, 0, 0, 1) })
	t.Logf("of 300 silent connections from 127.0.0.1: %d held by the gateway, %d refused", held, refused)
	out, errs, code := p.sshCmd("alice", "echo ok", "-b", "127.0.0.5")
	if code != 0 || out != "ok\n" {
		t.Fatalf("login from 127.0.0.5 while 127.0.0.1 holds 300 silent connections: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestPreAuthCapIsExact: with max_unauthenticated 100, 300 silent
// connections from 300 addresses (one each, so no per-address cap is
// reached) find exactly 100 held and 200 refused.
func TestPreAuthCapIsExact(t *testing.T) {
	const limit = 100
	p := newPool(t, poolOptions{nodes: 1, cfg: func(c *app.Config) { c.SSH.MaxUnauthenticated = limit }})
	held, refused := silentConns(t, p.entry, 300, func(i int) net.IP { return net.IPv4(127, 0, 1+byte(i/250), 1+byte(i%250)) })
	if held != limit || refused != 300-limit {
		t.Fatalf("of 300 silent connections from 300 addresses, %d held and %d refused; want exactly %d held (max_unauthenticated) and %d refused",
			held, refused, limit, 300-limit)
	}
}

// silentConns opens n TCP connections to entry, the i-th from from(i), and
// sends nothing on them. It counts those the gateway holds (it sent its
// SSH version and waits) and those it refused (any other answer, or
// closed). The connections stay open until the test ends.
func silentConns(t *testing.T, entry string, n int, from func(int) net.IP) (held, refused int) {
	t.Helper()
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from(i)}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", entry)
			if err != nil {
				t.Errorf("connection %d from %s: %v", i, from(i), err)
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			v, err := bufio.NewReader(c).ReadString('\n')
			_ = c.SetReadDeadline(time.Time{})
			mu.Lock()
			defer mu.Unlock()
			conns = append(conns, c)
			if err == nil && strings.HasPrefix(v, "SSH-") {
				held++
			} else {
				refused++
			}
		}()
	}
	wg.Wait()
	return held, refused
}
