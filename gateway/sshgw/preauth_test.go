package sshgw

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/poolgate/poolgate/internal/ratelog"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestBadVersionDroppedAtOnce: an SSH-1 client, or anything that is not
// SSH at all, is told why and closed at once (as OpenSSH does), not held
// for the login grace time (30 s here).
func TestBadVersionDroppedAtOnce(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.LoginGraceTime = 30 * time.Second })
	for first, want := range map[string]string{
		"SSH-1.5-Old\r\n":             "Protocol major versions differ.",
		"GET / HTTP/1.1\r\n":          "Invalid SSH identification string.",
		strings.Repeat("x", 300):      "Invalid SSH identification string.",
		"SSH-2.0-ok\r\n" + "\x00\x00": "", // a real client's line passes; the test only reads the banner
	} {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, first)
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if want == "" {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line != "SSH-2.0-poolgate\r\n" {
				t.Errorf("SSH-2.0 client: got %q", line)
			}
			continue
		}
		got, err := io.ReadAll(c)
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%q: still open after 3 s; read %q", first[:min(len(first), 20)], got)
			continue
		}
		if err != nil { // reset: the gateway closed with bytes of ours unread, the long line
			continue
		}
		if !strings.Contains(string(got), want) {
			t.Errorf("%q: read %q, want %q", first[:min(len(first), 20)], got, want)
		}
	}
}

func TestPreauthLogIsRateLimited(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	now := time.Unix(0, 0)
	l := &preauthLog{log: zap.New(core), limit: ratelog.Limiter{Every: time.Second, Now: func() time.Time { return now }}}
	for range 50 {
		l.failed("192.0.2.1:5000", "not an SSH-2.0 client", errBadVersion)
	}
	now = now.Add(2 * time.Second)
	l.failed("192.0.2.2:5000", "login grace time passed", nil)
	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d log lines for 51 failures, want 2", len(entries))
	}
	if c := entries[1].ContextMap(); c["client"] != "192.0.2.2:5000" || c["similar_since_last_line"] != int64(49) {
		t.Fatalf("second line %v", c)
	}
}

// TestBackoffGroupsIPv6AndStaysOnWhenFull: addresses of one IPv6 /64 share
// one count, and a full table still slows a new address that keeps
// failing.
func TestBackoffGroupsIPv6AndStaysOnWhenFull(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBackoff(BackoffConfig{After: 1, Delay: time.Second, MaxDelay: time.Minute, Forget: time.Hour}, func() time.Time { return now })
	b.max = 10
	b.failed(tcpAddr("2001:db8:1:2::1"))
	if d := b.failed(tcpAddr("2001:db8:1:2::ffff")); d != time.Second {
		t.Fatalf("second failure from the same /64: delay %s, want 1s", d)
	}
	for i := range 20 { // fill the table with other addresses
		b.failed(tcpAddr(fmt.Sprintf("198.51.100.%d", i)))
	}
	b.failed(tcpAddr("203.0.113.9"))
	if d := b.failed(tcpAddr("203.0.113.9")); d != time.Second {
		t.Fatalf("a new address with the table full: delay %s, want 1s", d)
	}
}

// TestPreauthSlotsPerAddress: one address holding as many pre-auth
// connections as it may leaves room for another, and the global cap is
// exact.
func TestPreauthSlotsPerAddress(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.MaxUnauthenticated = 8; c.MaxUnauthenticatedPerAddress = 4 })
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	dialFrom := func(ip string) (net.Conn, string) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return c, line
	}
	for i := range 6 { // 127.0.0.1 gets four, then refusals
		c, line := dialFrom("127.0.0.1")
		held = append(held, c)
		refused := strings.Contains(line, "too many connections from your address")
		if refused != (i >= 4) {
			t.Fatalf("connection %d from 127.0.0.1: %q", i+1, line)
		}
	}
	// Another address logs in.
	cfg := &ssh.ClientConfig{User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}
	nc, err := d.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, g.addr, cfg)
	if err != nil {
		t.Fatalf("127.0.0.5 while 127.0.0.1 holds its slots: %v", err)
	}
	ssh.NewClient(sc, chans, reqs).Close()
	// Its slot comes back once the gateway has seen it proven or closed,
	// a moment after the client is in (slower under -race and load).
	testutil.Eventually(t, 5*time.Second, "127.0.0.5's pre-auth slot to come back", func() bool {
		return g.srv.front.Slots.InUse() == 4
	})
	// Fill the rest from other addresses: exactly eight in all.
	for _, ip := range []string{"127.0.0.6", "127.0.0.6", "127.0.0.7", "127.0.0.7"} {
		c, line := dialFrom(ip)
		held = append(held, c)
		if strings.Contains(line, "too many") {
			t.Fatalf("slot %s refused with room left: %q", ip, line)
		}
	}
	if _, line := dialFrom("127.0.0.8"); !strings.Contains(line, "too many connections are logging in") {
		t.Fatalf("the ninth pre-auth connection: %q, want the global refusal", line)
	}
}

// TestPasswordPromptHasNoName: the keyboard-interactive prompt carries no
// name, which OpenSSH would print on a line of its own before every
// password prompt.
func TestPasswordPromptHasNoName(t *testing.T) {
	g := newTestGW(t, func(c *Config) { c.PasswordPassthrough = true })
	var names []string
	_, err := ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
		User: "alice",
		Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(name, _ string, qs []string, _ []bool) ([]string, error) {
			names = append(names, name)
			return make([]string, len(qs)), nil
		})},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	})
	if err == nil {
		t.Fatal("an empty password logged in")
	}
	if len(names) == 0 {
		t.Fatal("no keyboard-interactive prompt")
	}
	for _, n := range names {
		if n != "" {
			t.Fatalf("prompt names %q", names)
		}
	}
}
