package sshgw

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testutil"
)

// fakeIdentity is an identity provider whose sign-ins the test completes:
// each StartSignIn hands a code to the test on started, and the test
// answers on the code's result channel.
type fakeIdentity struct {
	started  chan *fakeCode
	startErr error

	mu     sync.Mutex
	starts int
	bound  map[string]BoundKey // fingerprint → binding
}

type fakeCode struct {
	msg    string
	result chan signInResult
}

type signInResult struct {
	who SignedIn
	err error
}

func newFakeIdentity() *fakeIdentity {
	return &fakeIdentity{started: make(chan *fakeCode, 8), bound: map[string]BoundKey{}}
}

func (f *fakeIdentity) StartSignIn(_ context.Context, _ string, _ net.Addr) (DeviceCode, error) {
	f.mu.Lock()
	f.starts++
	n := f.starts
	f.mu.Unlock()
	if f.startErr != nil {
		return nil, lineError{f.startErr}
	}
	c := &fakeCode{msg: "To sign in, open https://provider.test/device and enter the code CODE-" + string(rune('A'+n-1)) + ".", result: make(chan signInResult, 1)}
	f.started <- c
	return c, nil
}

func (f *fakeIdentity) BoundUser(_ context.Context, fp string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bound[fp]
	return b.User, ok
}

func (f *fakeIdentity) BindKey(_ context.Context, k BoundKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bound[k.Fingerprint] = k
	return nil
}

func (f *fakeIdentity) startCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

// lineError carries the user's line, as the real provider's errors do.
type lineError struct{ error }

func (e lineError) UserLine() string { return "poolgate: " + e.Error() }

func (c *fakeCode) Message() string    { return c.msg }
func (c *fakeCode) Expires() time.Time { return time.Now().Add(time.Minute) }
func (c *fakeCode) Wait(ctx context.Context) (SignedIn, error) {
	select {
	case r := <-c.result:
		if r.err != nil {
			return SignedIn{}, lineError{r.err}
		}
		return r.who, nil
	case <-ctx.Done():
		return SignedIn{}, ctx.Err()
	}
}

// signInDial logs in as user offering key (nil: none), answering
// keyboard-interactive rounds as a terminal would; instructions and
// banners are collected in shown.
func signInDial(addr, user string, key ssh.Signer, shown *testutil.SyncBuffer) (*ssh.Client, error) {
	var auth []ssh.AuthMethod
	if key != nil {
		auth = append(auth, ssh.PublicKeys(key))
	}
	auth = append(auth, ssh.KeyboardInteractive(func(name, instruction string, questions []string, echos []bool) ([]string, error) {
		_, _ = shown.Write([]byte(instruction + "\n"))
		return make([]string, len(questions)), nil
	}))
	return ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: user, Auth: auth, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
		BannerCallback: func(m string) error { _, _ = shown.Write([]byte(m)); return nil },
	})
}

// TestSignInBindsTheProvenKey: dave has no authorized_keys file. His
// first ssh shows the provider's words and waits, taking nothing; once he
// signs in he is on a node, and his next connection with the same key
// goes straight in without the provider.
func TestSignInBindsTheProvenKey(t *testing.T) {
	id := newFakeIdentity()
	g := startTestGW(t, testGWOptions{identity: id})
	daveKey, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "dave_key"), "dave")
	if err != nil {
		t.Fatal(err)
	}
	var shown testutil.SyncBuffer
	type dialed struct {
		c   *ssh.Client
		err error
	}
	done := make(chan dialed, 1)
	go func() { c, err := signInDial(g.addr, "dave", daveKey, &shown); done <- dialed{c, err} }()
	code := <-id.started
	testutil.Eventually(t, 5*time.Second, "the client was shown the provider's words", func() bool { return strings.Contains(shown.String(), code.msg) })
	if n := g.bal.UserSessions("dave"); n != 0 || len(g.bal.Sessions()) != 0 || len(g.bal.Pins()) != 0 {
		t.Fatalf("a sign-in under way took %d sessions, %d pins", n, len(g.bal.Pins()))
	}
	code.result <- signInResult{who: SignedIn{User: "dave", Subject: "sub-dave"}}
	d := <-done
	if d.err != nil {
		t.Fatalf("dave after signing in: %v (shown %q)", d.err, shown.String())
	}
	defer d.c.Close()
	s, err := d.c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.Output("whoami"); err != nil || string(out) != "dave" {
		t.Fatalf("the node saw %q (%v), want dave", out, err)
	}
	if _, ok := id.BoundUser(context.Background(), ssh.FingerprintSHA256(daveKey.PublicKey())); !ok {
		t.Fatal("dave's key was not bound after his sign-in")
	}

	// The next connection with the same key needs no sign-in.
	var again testutil.SyncBuffer
	c2, err := signInDial(g.addr, "dave", daveKey, &again)
	if err != nil {
		t.Fatalf("dave's bound key: %v (shown %q)", err, again.String())
	}
	c2.Close()
	if n := id.startCount(); n != 1 {
		t.Fatalf("the bound key started %d sign-ins in all, want 1", n)
	}

	// The bound key is dave's only: as erin it asks for a sign-in.
	go func() { c, err := signInDial(g.addr, "erin", daveKey, &again); done <- dialed{c, err} }()
	code = <-id.started
	code.result <- signInResult{who: SignedIn{User: "dave", Subject: "sub-dave"}}
	if d := <-done; d.err == nil {
		d.c.Close()
		t.Fatal("dave's sign-in logged in as erin")
	}
	if !strings.Contains(again.String(), "you signed in as dave, so you cannot log in as erin") {
		t.Fatalf("erin signed in as dave was shown %q", again.String())
	}
	if n := id.startCount(); n != 2 {
		t.Fatalf("a refused sign-in was retried by the client: %d starts, want 2", n)
	}
}

// TestSignInRefusals: a declined sign-in and a provider that is down each
// give the user their line and take nothing; a key with no file and no
// sign-in gets nothing either.
func TestSignInRefusals(t *testing.T) {
	id := newFakeIdentity()
	g := startTestGW(t, testGWOptions{identity: id})

	var shown testutil.SyncBuffer
	done := make(chan error, 1)
	go func() { _, err := signInDial(g.addr, "dave", nil, &shown); done <- err }()
	code := <-id.started
	code.result <- signInResult{err: errors.New("you declined the sign-in")}
	if err := <-done; err == nil {
		t.Fatal("a declined sign-in logged in")
	}
	if !strings.Contains(shown.String(), "poolgate: you declined the sign-in") {
		t.Fatalf("a declined sign-in was shown %q", shown.String())
	}
	if len(g.bal.Sessions()) != 0 || len(g.bal.Pins()) != 0 {
		t.Fatal("a declined sign-in left a session or a pin")
	}

	id.startErr = errors.New("the identity provider did not answer; try again in a minute")
	var down testutil.SyncBuffer
	if _, err := signInDial(g.addr, "dave", nil, &down); err == nil {
		t.Fatal("logged in with the provider down")
	}
	if !strings.Contains(down.String(), "poolgate: the identity provider did not answer") {
		t.Fatalf("provider down was shown %q", down.String())
	}

	// alice has an authorized_keys file: her key goes in as before.
	c := dialAs(t, g.addr, "alice", g.userKey)
	c.Close()
}
