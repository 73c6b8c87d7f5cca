package app

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo follows the README: run the demo, log in as it says, and see
// alice stay on her node while bob goes to another.
func TestDemo(t *testing.T) {
	var out testutil.SyncBuffer
	defer func() {
		if t.Failed() {
			t.Logf("the demo printed:\n%s", out.String())
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunDemo(ctx, DemoOptions{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", StateDir: t.TempDir(), Out: &out}, zaptest.NewLogger(t))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunDemo: %v", err)
		}
	}()
	re := regexp.MustCompile(`ssh -p (\d+) alice@(127\.0\.0\.1)`)
	var addr string
	testutil.Eventually(t, 10*time.Second, "the demo to print an ssh command", func() bool {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			addr = m[2] + ":" + m[1]
		}
		return addr != ""
	})
	if !strings.Contains(out.String(), "password: "+DemoPassword) {
		t.Fatalf("demo does not say the password:\n%s", out.String())
	}
	dial := func(user string) *ssh.Client {
		t.Helper()
		var c *ssh.Client
		var err error
		// The first health checks may not have reported yet.
		testutil.Eventually(t, 10*time.Second, "ssh "+user+" to log in", func() bool {
			c, err = ssh.Dial("tcp", addr, &ssh.ClientConfig{
				User: user, Auth: []ssh.AuthMethod{ssh.Password(DemoPassword)},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
			})
			return err == nil
		})
		if err != nil {
			t.Fatalf("ssh %s: %v", user, err)
		}
		return c
	}
	node := func(c *ssh.Client) string {
		t.Helper()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		b, err := s.Output("hostname")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	alice := dial("alice")
	defer alice.Close()
	home := node(alice)
	if !strings.HasPrefix(home, "node-") {
		t.Fatalf("demo hostname = %q", home)
	}
	alice2 := dial("alice")
	defer alice2.Close()
	if got := node(alice2); got != home {
		t.Fatalf("alice's second session on %s, want %s", got, home)
	}
	// In a browser (a client with its own cookies), alice signs in and
	// lands on her SSH node; the hub pages that name no user follow her
	// too, thanks to the gateway's cookie.
	web := regexp.MustCompile(`open (http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(out.String())
	if web == nil {
		t.Fatalf("demo prints no browser address:\n%s", out.String())
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	var page string
	testutil.Eventually(t, 10*time.Second, "alice's hub page", func() bool {
		resp, err := browser.PostForm(web[1]+"/hub/login", url.Values{"username": {"alice"}, "password": {"x"}})
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			page = string(b)
		}
		return strings.Contains(page, `id="node"`)
	})
	if !strings.Contains(page, `<b id="node">`+home+`</b>`) {
		t.Fatalf("alice's browser page does not name her node %s:\n%s", home, page)
	}
	bob := dial("bob")
	defer bob.Close()
	if got := node(bob); got == home {
		t.Fatalf("bob landed on alice's node %s while she is connected", got)
	}
	// A script on stdin: a mistyped "exitx" is a command not found, not
	// an exit; the script goes on.
	s, _ := bob.NewSession()
	s.Stdin = strings.NewReader("exitx\nhostname\nexit 3\n")
	script, err := s.Output("")
	if !isExit(err, 3) || !strings.Contains(string(script), "exitx: command not found") || !strings.Contains(string(script), "node-") {
		t.Fatalf("script exitx/hostname/exit 3: %q, %v", script, err)
	}
	s.Close()
	s, _ = bob.NewSession()
	if out, err := s.Output("sleep 0"); err != nil || len(out) != 0 {
		t.Fatalf("sleep 0: %q %v", out, err)
	}
	s.Close()
	s, _ = bob.NewSession()
	defer s.Close()
	if err := s.Run("exit 4"); err == nil || !isExit(err, 4) {
		t.Fatalf("exit 4 through the demo: %T %v", err, err)
	}
}

func isExit(err error, code int) bool {
	ee, ok := err.(*ssh.ExitError)
	return ok && ee.ExitStatus() == code
}
