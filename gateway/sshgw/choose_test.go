package sshgw

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testutil"
)

// sessionNode is the node of the user's live session, from the balancer.
func sessionNode(t *testing.T, g *testGW, user string) string {
	t.Helper()
	for _, s := range g.bal.Sessions() {
		if s.User == user {
			return s.Node
		}
	}
	return ""
}

func TestChooseNode(t *testing.T) {
	two := func(ca ssh.PublicKey) string { return testNode(t, ca) }
	g := newTestGW(t, nil, two, two)
	c := dialAs(t, g.addr, "alice+n2", g.userKey)
	if got := sessionNode(t, g, "alice"); got != "n2" {
		t.Fatalf("alice+n2 landed on %q", got)
	}
	for _, s := range g.bal.Sessions() {
		if s.User != "alice" {
			t.Fatalf("session counted for %q, want the plain user alice", s.User)
		}
	}
	c.Close()
	testutilWaitNoSessions(t, g)
	// Her next plain login follows her choice.
	c = dialAs(t, g.addr, "alice", g.userKey)
	defer c.Close()
	if got := sessionNode(t, g, "alice"); got != "n2" {
		t.Fatalf("alice's plain login after choosing n2 landed on %q", got)
	}
	pins := g.bal.Pins()
	if len(pins) != 1 || pins[0].Node != "n2" || pins[0].By != "user" {
		t.Fatalf("pins %+v, want alice on n2 chosen by the user", pins)
	}
	for name, want := range map[string]string{
		"alice+n9":  "you cannot choose node n9 now: it is not in the pool. Nodes you can choose: n1, n2.",
		"alice+n/1": `"n/1" is not a node name`,
		"alice+":    "is not a node name",
	} {
		_, banner, err := dialBanner(g.addr, name, g.userKey)
		if err == nil || !strings.Contains(banner, want) {
			t.Errorf("%s: err %v, banner %q, want %q", name, err, banner, want)
		}
	}
	_ = g.bal.Drain("n1")
	if _, banner, _ := dialBanner(g.addr, "bob+n1", g.userKey); !strings.Contains(banner, "n1 now: it is being drained") || !strings.Contains(banner, "choose: n2.") {
		t.Errorf("bob onto drained n1: banner %q", banner)
	}
}

func TestNodeChoiceOff(t *testing.T) {
	off := false
	g := newTestGW(t, func(c *Config) { c.NodeChoice = &off })
	if _, banner, err := dialBanner(g.addr, "alice+n1", g.userKey); err == nil || !strings.Contains(banner, "choosing a node (alice+NODE) is turned off") {
		t.Fatalf("with node_choice off: %v, banner %q", err, banner)
	}
	empty := ""
	if err := (Config{NodeSeparator: &empty}).Validate(); err != nil {
		t.Fatalf("an empty separator turns the feature off: %v", err)
	}
	dot := "."
	if err := (Config{NodeSeparator: &dot}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "node_separator:") {
		t.Fatalf("a separator that user names use: %v", err)
	}
}

func testutilWaitNoSessions(t *testing.T, g *testGW) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, "no sessions", func() bool { return len(g.bal.Sessions()) == 0 })
}

// TestLoginNameIsCanonical is issue 22 on the SSH side: "Alice" and
// "ALICE+n2" are the user alice, whose authorized_keys, certificate,
// node login, session and pin all say "alice".
func TestLoginNameIsCanonical(t *testing.T) {
	two := func(ca ssh.PublicKey) string { return testNode(t, ca) }
	g := newTestGW(t, nil, two, two)
	whoami := func(c *ssh.Client) string {
		t.Helper()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, err := s.Output("whoami")
		if err != nil {
			t.Fatalf("whoami: %v", err)
		}
		return string(out)
	}
	c := dialAs(t, g.addr, "ALICE+n2", g.userKey)
	if got := whoami(c); got != "alice" {
		t.Fatalf("ALICE+n2 logged in to the node as %q, want alice", got)
	}
	c2 := dialAs(t, g.addr, "Alice", g.userKey)
	if got := whoami(c2); got != "alice" {
		t.Fatalf("Alice logged in to the node as %q, want alice", got)
	}
	for _, s := range g.bal.Sessions() {
		if s.User != "alice" || s.Node != "n2" {
			t.Fatalf("session %+v, want alice's on n2", s)
		}
	}
	if pins := g.bal.Pins(); len(pins) != 1 || pins[0].User != "alice" || pins[0].Node != "n2" {
		t.Fatalf("pins %+v, want alice's one pin on n2", pins)
	}
	c.Close()
	c2.Close()
	testutilWaitNoSessions(t, g)

	// What no case folding makes valid is refused, as a wrong key is.
	for _, name := range []string{"alice\x1b[31m", "alice bob", "jürgen", "\u212Aate"} {
		if c, banner, err := dialBanner(g.addr, name, g.userKey); err == nil {
			c.Close()
			t.Errorf("%q logged in", name)
		} else if strings.ContainsAny(banner, "\x1b") || !strings.Contains(banner, "poolgate: ") {
			t.Errorf("%q: banner %q", name, banner)
		}
	}
}

// unprovenView is what a client without an account sees of a login as
// user: the banner lines, whether and how it was asked for a password
// (keyboard-interactive), and the error, for a wrong password.
func unprovenView(t *testing.T, addr, user string, stranger ssh.Signer) string {
	t.Helper()
	var banner, prompts strings.Builder
	_, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{
			ssh.PublicKeys(stranger),
			ssh.RetryableAuthMethod(ssh.KeyboardInteractive(func(name, instruction string, questions []string, echos []bool) ([]string, error) {
				fmt.Fprintf(&prompts, "[%q %q %q %v]", name, instruction, questions, echos)
				return make([]string, len(questions)), nil
			}), 2),
			ssh.Password("a guess"),
		},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
		BannerCallback: func(m string) error { banner.WriteString(m); return nil },
	})
	if err == nil {
		t.Fatalf("%s logged in without credentials", user)
	}
	who, _, _ := strings.Cut(user, "+")
	return strings.ReplaceAll(fmt.Sprintf("banner %q prompts %s error %v", banner.String(), prompts.String(), err), who, "USER")
}

// TestNodeChoiceTellsNothingBeforeAuth is issue 25, item 3: before
// authentication, user+node gets the same answer whatever the node (known
// or not, draining or not, the user's pin or not); the reasons come to a
// proven user only.
func TestNodeChoiceTellsNothingBeforeAuth(t *testing.T) {
	two := func(ca ssh.PublicKey) string { return testNode(t, ca) }
	g := newTestGW(t, func(c *Config) {
		c.PasswordPassthrough = true
		c.AuthBackoff.Allow = []string{"127.0.0.0/8"} // many failures from one address, on purpose
	}, two, two)
	stranger, err := ssh.NewSignerFromKey(mustEd25519(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dialAs(t, g.addr, "alice+n2", g.userKey) // alice is pinned to n2
	c.Close()
	testutilWaitNoSessions(t, g)
	_ = g.bal.Drain("n2")

	want := unprovenView(t, g.addr, "mallory+n1", stranger) // a node anyone may choose
	if !strings.Contains(want, `"Password: "`) {
		t.Fatalf("no password prompt for mallory+n1: %s", want)
	}
	// The refusal without a node takes about what a node's refusal took.
	typical := g.srv.refusals.typical()
	if typical <= 0 {
		t.Fatal("a node refused a password, and its time was not noted")
	}
	began := time.Now()
	if got := unprovenView(t, g.addr, "mallory+n9", stranger); got != want {
		t.Errorf("mallory+n9 is told apart before authentication:\n got %s\nwant %s", got, want)
	}
	if took := time.Since(began); took < typical {
		t.Errorf("mallory+n9 was refused in %v, quicker than a node's refusal (%v)", took, typical)
	}
	for _, user := range []string{"mallory+n2", "alice+n2", "bob+n2", "alice+n1", "alice"} {
		if got := unprovenView(t, g.addr, user, stranger); got != want {
			t.Errorf("%s is told apart before authentication:\n got %s\nwant %s", user, got, want)
		}
	}
	for _, name := range []string{"bob+n9", "bob+n2"} {
		if c, _, err := passwordLogin(g.addr, name, testPassword); err == nil {
			c.Close()
			t.Errorf("%s logged in by password", name)
		}
	}

	// A proven user hears the reasons.
	if _, banner, err := dialBanner(g.addr, "bob+n2", g.userKey); err == nil || !strings.Contains(banner, "you cannot choose node n2 now: it is being drained") || !strings.Contains(banner, "choose: n1.") {
		t.Errorf("bob's key onto drained n2: %v, banner %q", err, banner)
	}
	if _, banner, err := dialBanner(g.addr, "bob+n9", g.userKey); err == nil || !strings.Contains(banner, "n9 now: it is not in the pool") {
		t.Errorf("bob's key onto unknown n9: %v, banner %q", err, banner)
	}
	// alice, pinned to drained n2, may still go there by password.
	c, _, err = passwordLogin(g.addr, "alice+n2", testPassword)
	if err != nil {
		t.Fatalf("alice+n2, her pin, by password: %v", err)
	}
	c.Close()
}

func mustEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRefusalTime(t *testing.T) {
	var r refusalTime
	if r.typical() != 0 {
		t.Fatal("typical before any refusal")
	}
	r.observe(80 * time.Millisecond)
	if r.typical() != 80*time.Millisecond {
		t.Fatalf("first refusal: %v", r.typical())
	}
	r.observe(160 * time.Millisecond)
	if r.typical() != 90*time.Millisecond {
		t.Fatalf("after 80ms and 160ms: %v, want 90ms", r.typical())
	}
}
