package sshgw

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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
	l := &preauthLog{log: zap.New(core), interval: time.Second, now: func() time.Time { return now }}
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
