package sshgw

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/testutil"
)

// fakeStarter stands in for scale from zero: it offers a wait while ok,
// and runs onCall with the number of calls so far.
type fakeStarter struct {
	mu     sync.Mutex
	calls  int
	ok     bool
	onCall func(n int)
}

func (f *fakeStarter) StartNode() (time.Time, bool) {
	f.mu.Lock()
	f.calls++
	n, ok, hook := f.calls, f.ok, f.onCall
	f.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return time.Now().Add(time.Minute), ok
}

func (f *fakeStarter) set(ok bool) { f.mu.Lock(); f.ok = ok; f.mu.Unlock() }

// swapStarter is the test gateway's Starter: it passes calls to the
// starter a test sets, and offers no start until one is set, as a server
// without a Starter.
type swapStarter struct {
	mu sync.Mutex // protects to
	to Starter
}

func (s *swapStarter) set(to Starter) { s.mu.Lock(); s.to = to; s.mu.Unlock() }

func (s *swapStarter) StartNode() (time.Time, bool) {
	s.mu.Lock()
	to := s.to
	s.mu.Unlock()
	if to == nil {
		return time.Time{}, false
	}
	return to.StartNode()
}

func fastStartPolls(t *testing.T) {
	pe, ne := startPollEvery, startNoteEvery
	startPollEvery, startNoteEvery = 10*time.Millisecond, 30*time.Millisecond
	t.Cleanup(func() { startPollEvery, startNoteEvery = pe, ne })
}

// dialBanner dials as user and returns the client (nil on failure), the
// banner lines seen and the error.
func dialBanner(addr, user string, signer ssh.Signer) (*ssh.Client, string, error) {
	var mu sync.Mutex
	var banner strings.Builder
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
		BannerCallback: func(m string) error { mu.Lock(); banner.WriteString(m); mu.Unlock(); return nil },
	})
	mu.Lock()
	defer mu.Unlock()
	return c, banner.String(), err
}

func TestUserWaitsForStartingNode(t *testing.T) {
	fastStartPolls(t)
	g := newTestGW(t, nil)
	g.bal.SetHealth("n1", balancer.SSH, false, "instance starting")
	g.bal.NodeFailed("n1", balancer.SSH) // gone, not merely slow: the pool has no node
	st := &fakeStarter{ok: true}
	st.onCall = func(n int) {
		if n == 8 { // the node comes up while alice waits
			g.bal.SetHealth("n1", balancer.SSH, true, "")
		}
	}
	g.starter.set(st)
	c, banner, err := dialBanner(g.addr, "alice", g.userKey)
	if err != nil {
		t.Fatalf("alice waiting for a starting node: %v (banner %q)", err, banner)
	}
	defer c.Close()
	for _, want := range []string{"one is being started for you", "still starting a node", "node n1 has started; logging you in"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner %q lacks %q", banner, want)
		}
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s.Stdin = strings.NewReader("on the started node\n")
	if out, err := s.Output("cat"); err != nil || string(out) != "on the started node\n" {
		t.Errorf("session on the started node: %q %v", out, err)
	}
}

func TestStartThatGivesUpRefusesClearly(t *testing.T) {
	fastStartPolls(t)
	g := newTestGW(t, nil)
	g.bal.SetHealth("n1", balancer.SSH, false, "")
	g.bal.NodeFailed("n1", balancer.SSH) // gone, not merely slow: the pool has no node
	st := &fakeStarter{ok: true}
	st.onCall = func(n int) {
		if n == 3 {
			st.set(false)
		}
	}
	g.starter.set(st)
	c, banner, err := dialBanner(g.addr, "alice", g.userKey)
	if err == nil {
		c.Close()
		t.Fatal("login succeeded with no node")
	}
	if !strings.Contains(banner, "one is being started for you") || !strings.Contains(banner, "no node could be started for you in time") {
		t.Errorf("banner %q", banner)
	}

	// No start offered (nodes exist but are full, or scale from zero is
	// off): the usual refusal, at once.
	st2 := &fakeStarter{ok: false}
	g.starter.set(st2)
	_, banner, err = dialBanner(g.addr, "bob", g.userKey)
	if err == nil || !strings.Contains(banner, "no node in the pool can take your session") || strings.Contains(banner, "started") {
		t.Errorf("no start offered: err %v, banner %q", err, banner)
	}
}

func TestShutdownEndsStartWait(t *testing.T) {
	fastStartPolls(t)
	g := newTestGW(t, nil)
	g.bal.SetHealth("n1", balancer.SSH, false, "")
	g.bal.NodeFailed("n1", balancer.SSH) // gone, not merely slow: the pool has no node
	waiting := make(chan struct{})
	var once sync.Once
	g.starter.set(&fakeStarter{ok: true, onCall: func(int) { once.Do(func() { close(waiting) }) }})
	done := make(chan string)
	go func() { _, banner, _ := dialBanner(g.addr, "alice", g.userKey); done <- banner }()
	<-waiting
	g.srv.front.StopAccepting()
	select {
	case banner := <-done:
		if !strings.Contains(banner, "shutting down") {
			t.Errorf("banner %q", banner)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a user waiting for a node held up shutdown")
	}
}

// passwordFrom tries a password login as user from the local address
// from (127.0.0.N), returning the banner lines and the error.
func passwordFrom(t *testing.T, addr, from, user string) (string, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var banner testutil.SyncBuffer
	conn, _, _, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.Password("any guess")},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		BannerCallback:  func(m string) error { _, _ = banner.Write([]byte(m)); return nil },
	})
	if err == nil {
		conn.Close()
	}
	return banner.String(), err
}

// TestPasswordLoginsStartNodesWithinBounds: a password is proven only by
// the node, so logins by password may start a node (or wait for one) only
// a few times per start timeout, from one address and in all, each
// logged with its client; beyond that, or with scale_from_zero:
// keys_only (no PasswordStarts), they are refused at once as when no
// node is coming, while a proven key still starts one.
func TestPasswordLoginsStartNodesWithinBounds(t *testing.T) {
	fastStartPolls(t)
	noNode := func(g *testGW) {
		g.bal.SetHealth("n1", balancer.SSH, false, "")
		g.bal.NodeFailed("n1", balancer.SSH) // gone: the pool has no node
	}
	// A starter that starts and gives up after a few polls, counting the
	// logins that asked it first.
	starter := func() *fakeStarter {
		st := &fakeStarter{ok: true}
		st.onCall = func(n int) {
			if n%3 == 0 {
				st.set(false)
			}
		}
		return st
	}
	calls := func(st *fakeStarter) int { st.mu.Lock(); defer st.mu.Unlock(); return st.calls }
	passthrough := func(c *Config) { c.PasswordPassthrough = true }

	t.Run("bounded", func(t *testing.T) {
		g := startTestGW(t, testGWOptions{adjust: passthrough, pwStarts: &StartLimit{Window: time.Hour, PerAddress: 1, Total: 2}})
		noNode(g)
		for i, tc := range []struct {
			from    string
			started bool
		}{
			{"127.0.0.1", true},
			{"127.0.0.1", false}, // the address's one start is used
			{"127.0.0.2", true},
			{"127.0.0.3", false}, // two in all are used
		} {
			st := starter()
			g.starter.set(st)
			banner, err := passwordFrom(t, g.addr, tc.from, "nosuch")
			if err == nil {
				t.Fatalf("login %d from %s: a guessed password logged in", i, tc.from)
			}
			if got := calls(st) > 0; got != tc.started {
				t.Errorf("login %d from %s: starter asked %d times, want a start: %v", i, tc.from, calls(st), tc.started)
			}
			if tc.started && !strings.Contains(banner, "one is being started for you") {
				t.Errorf("login %d from %s: banner %q", i, tc.from, banner)
			}
			if !tc.started && (!strings.Contains(banner, "no node in the pool can take your session") || strings.Contains(banner, "started")) {
				t.Errorf("login %d from %s, beyond the bound: banner %q, want the usual no-node line", i, tc.from, banner)
			}
		}
		logged := map[string]bool{}
		for _, e := range g.logs.FilterMessage("password login, not yet proven, starts or waits for a node").All() {
			host, _, _ := net.SplitHostPort(e.ContextMap()["client"].(string))
			logged[host] = true
		}
		if !logged["127.0.0.1"] || !logged["127.0.0.2"] || len(logged) != 2 {
			t.Errorf("password starts logged for clients %v, want 127.0.0.1 and 127.0.0.2", logged)
		}

		// A proven user is not bounded.
		st := starter()
		g.starter.set(st)
		if c, banner, err := dialBanner(g.addr, "alice", g.userKey); err == nil || calls(st) == 0 || !strings.Contains(banner, "one is being started for you") {
			if c != nil {
				c.Close()
			}
			t.Errorf("a proven key, after the password bound: err %v, %d starts, banner %q", err, calls(st), banner)
		}
	})

	t.Run("keys_only", func(t *testing.T) {
		g := startTestGW(t, testGWOptions{adjust: passthrough})
		noNode(g)
		st := starter()
		g.starter.set(st)
		banner, err := passwordFrom(t, g.addr, "127.0.0.1", "nosuch")
		if err == nil || calls(st) != 0 || !strings.Contains(banner, "only a login with a key may start one here") {
			t.Errorf("password login with keys_only: err %v, %d starts, banner %q", err, calls(st), banner)
		}
		if _, banner, err := dialBanner(g.addr, "alice", g.userKey); err == nil || calls(st) == 0 || !strings.Contains(banner, "one is being started for you") {
			t.Errorf("a proven key with keys_only: err %v, %d starts, banner %q", err, calls(st), banner)
		}
	})
}

// TestBusyPoolIsSaid: a user placed on a saturated node while a new one
// starts is told so in one line, and logs in; on a node that is not
// saturated, nothing is said.
func TestBusyPoolIsSaid(t *testing.T) {
	var busyNow atomic.Bool
	g := startTestGW(t, testGWOptions{busy: func(node string) bool { return busyNow.Load() && node == "n1" }})
	for _, want := range []bool{true, false} {
		busyNow.Store(want)
		var banners []string
		c, err := ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
			User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			BannerCallback:  func(m string) error { banners = append(banners, m); return nil },
		})
		if err != nil {
			t.Fatalf("busy %v: login refused: %v", want, err)
		}
		c.Close()
		said := len(banners) == 1 && strings.Contains(banners[0], "the pool is busy: node n1 is loaded and a new node is starting")
		if said != want || (!want && len(banners) != 0) {
			t.Fatalf("busy %v: banners %q", want, banners)
		}
	}
}
