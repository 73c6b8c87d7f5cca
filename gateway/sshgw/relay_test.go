package sshgw

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/recording"
)

// testPassword is the password every test node accepts.
const testPassword = "node-password-1"

// testNode is an in-process SSH node that trusts the gateway CA (and
// accepts testPassword for any user). Its
// commands: "exit N" (exit at once with N), "out N" (N bytes on stdout and
// "err" on stderr), "eof-exit N" ("out", EOF, and exit N 200 ms later, as
// a command that closes its output before it ends), "cat" (echo stdin).
func testNode(t *testing.T, ca ssh.PublicKey) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gliderssh.Server{
		Handler: func(s gliderssh.Session) {
			f := strings.Fields(s.RawCommand())
			switch {
			case len(f) == 2 && f[0] == "exit":
				n, _ := strconv.Atoi(f[1])
				_ = s.Exit(n)
			case len(f) == 2 && f[0] == "out":
				n, _ := strconv.Atoi(f[1])
				_, _ = s.Write(bytes.Repeat([]byte("x"), n))
				_, _ = io.WriteString(s.Stderr(), "err")
				_ = s.Exit(0)
			case len(f) == 2 && f[0] == "eof-exit":
				n, _ := strconv.Atoi(f[1])
				_, _ = io.WriteString(s, "out")
				_ = s.CloseWrite()
				time.Sleep(200 * time.Millisecond)
				_ = s.Exit(n)
			case len(f) == 1 && f[0] == "cipher": // what the gateway negotiated with this node
				conn := s.Context().Value(gliderssh.ContextKeyConn).(*ssh.ServerConn).Conn.(ssh.AlgorithmsConnMetadata)
				_, _ = io.WriteString(s, conn.Algorithms().Read.Cipher)
				_ = s.Exit(0)
			case len(f) == 1 && f[0] == "globals": // global requests toward the client, as sshd sends after login
				conn := s.Context().Value(gliderssh.ContextKeyConn).(*ssh.ServerConn)
				_, _, _ = conn.SendRequest("hostkeys-00@openssh.com", false, nil)
				_, _, _ = conn.SendRequest("example@poolgate.test", false, []byte("passed"))
				_ = s.Exit(0)
			case len(f) == 1 && f[0] == "whoami": // the name the gateway logged in with
				_, _ = io.WriteString(s, s.User())
				_ = s.Exit(0)
			case len(f) == 1 && f[0] == "cat":
				_, _ = io.Copy(s, s)
				_ = s.Exit(0)
			default:
				_ = s.Exit(127)
			}
		},
		PasswordHandler: func(_ gliderssh.Context, pw string) bool { return pw == testPassword },
		PublicKeyHandler: func(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
			cert, ok := key.(*ssh.Certificate)
			return ok && bytes.Equal(cert.SignatureKey.Marshal(), ca.Marshal()) &&
				(&ssh.CertChecker{}).CheckCert(ctx.User(), cert) == nil
		},
	}
	hk, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "node_key"), "node")
	if err != nil {
		t.Fatal(err)
	}
	srv.AddHostKey(hk)
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// testGateway runs a gateway in front of one test node; alice's key is
// authorized. It returns the gateway address and alice's signer.
func testGateway(t *testing.T) (string, ssh.Signer) {
	g := newTestGW(t, nil)
	return g.addr, g.userKey
}

type testGW struct {
	addr    string
	userKey ssh.Signer
	keys    *Keys
	bal     *balancer.Balancer
	srv     *Server
	starter *swapStarter // the server's Starter; none until set
	logs    *observer.ObservedLogs
	reg     *prometheus.Registry // the metrics' registry, when a test keeps it
}

// newTestGW runs a gateway with cfg adjusted by adjust, in front of the
// nodes that nodes starts (given the gateway CA), or one testNode.
func newTestGW(t *testing.T, adjust func(*Config), nodes ...func(ca ssh.PublicKey) string) *testGW {
	t.Helper()
	return newTestGWMetrics(t, nil, adjust, nodes...)
}

// newTestGWMetrics is newTestGW recording into m.
func newTestGWMetrics(t *testing.T, m *Metrics, adjust func(*Config), nodes ...func(ca ssh.PublicKey) string) *testGW {
	t.Helper()
	return startTestGW(t, testGWOptions{metrics: m, adjust: adjust, nodes: nodes})
}

// testGWOptions are what test gateways differ in.
type testGWOptions struct {
	ca      ssh.Signer // the user CA; nil: the file CA in state_dir
	metrics *Metrics
	log     *zap.Logger // nil: an observer, read through testGW.logs
	adjust  func(*Config)
	nodes   []func(ca ssh.PublicKey) string // nil: one testNode
	// pwStarts is Options.PasswordStarts.
	pwStarts *StartLimit
	// identity is Options.Identity.
	identity Identity
	// busy is Options.Busy.
	busy func(node string) bool
	// recorder is Options.Recorder.
	recorder *recording.Store
}

// startTestGW runs a gateway as o says; alice's, bob's and carol's
// authorized_keys hold the test user key.
func startTestGW(t *testing.T, o testGWOptions) *testGW {
	t.Helper()
	dir := t.TempDir()
	keys, err := LoadKeysCA(filepath.Join(dir, "state"), o.ca)
	if err != nil {
		t.Fatal(err)
	}
	nodes, m, adjust := o.nodes, o.metrics, o.adjust
	if len(nodes) == 0 {
		nodes = append(nodes, func(ca ssh.PublicKey) string { return testNode(t, ca) })
	}
	bal := balancer.New(balancer.Config{}, balancer.Options{})
	var set []balancer.Node
	for i, start := range nodes {
		set = append(set, balancer.Node{Name: fmt.Sprintf("n%d", i+1), SSH: start(keys.CA.PublicKey())})
	}
	bal.SetNodes(set)
	for _, n := range set {
		bal.SetHealth(n.Name, balancer.SSH, true, "")
	}
	userKey, err := LoadOrCreateKey(filepath.Join(dir, "alice_key"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	keyDir := filepath.Join(dir, "keys")
	for _, u := range []string{"alice", "bob", "carol"} {
		writeFile(t, filepath.Join(keyDir, u), ssh.MarshalAuthorizedKey(userKey.PublicKey()))
	}
	cfg := Config{AuthorizedKeys: KeysTemplate(keyDir + "/{user}")}
	if adjust != nil {
		adjust(&cfg)
	}
	starter := &swapStarter{}
	var logs *observer.ObservedLogs
	log := o.log
	if log == nil {
		var core zapcore.Core
		core, logs = observer.New(zap.InfoLevel)
		log = zap.New(core)
	}
	srv, err := New(cfg, bal, Options{Keys: keys, Metrics: m, Starter: starter, PasswordStarts: o.pwStarts, Identity: o.identity, Busy: o.busy, Recorder: o.recorder, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &testGW{addr: ln.Addr().String(), userKey: userKey, keys: keys, bal: bal, srv: srv, starter: starter, logs: logs}
}

func dialAs(t *testing.T, addr, user string, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

// TestRelayReplyBeforeClose: a command that ends at once must still give
// the client its exec reply, then its exit status — over and over, since a
// wrong order shows only sometimes.
func TestRelayReplyBeforeClose(t *testing.T) {
	addr, key := testGateway(t)
	c := dialAs(t, addr, "alice", key)
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := c.NewSession()
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			code := i % 256
			err = s.Run(fmt.Sprintf("exit %d", code))
			if ee, ok := err.(*ssh.ExitError); code == 0 && err != nil || code != 0 && (!ok || ee.ExitStatus() != code) {
				errs <- fmt.Errorf("exit %d: got %v", code, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestUpstreamCipher: toward the node the gateway uses AES-GCM when the
// CPU has AES instructions, whatever the client chose; otherwise the
// client's choice.
func TestUpstreamCipher(t *testing.T) {
	addr, key := testGateway(t)
	for _, cipher := range []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES256GCM, ssh.CipherAES128GCM} {
		c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
			User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			Config: ssh.Config{Ciphers: []string{cipher}},
		})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := c.NewSession()
		out, err := s.Output("cipher")
		c.Close()
		want := cipher
		if aesHardware {
			want = ssh.CipherAES128GCM
		}
		if err != nil || string(out) != want {
			t.Fatalf("client chose %s; node leg uses %q (%v), want %s (AES hardware: %v)", cipher, out, err, want, aesHardware)
		}
	}
}

// fakeMeta is ConnMetadata with negotiated algorithms.
type fakeMeta struct {
	ssh.ConnMetadata
	cipher string
}

func (f fakeMeta) Algorithms() ssh.NegotiatedAlgorithms {
	return ssh.NegotiatedAlgorithms{Read: ssh.DirectionAlgorithms{Cipher: f.cipher}}
}

func TestUpstreamCiphersWithoutAES(t *testing.T) {
	got := nodeCiphers(fakeMeta{cipher: ssh.CipherChaCha20Poly1305}, false, DefaultCiphers)
	if len(got) == 0 || got[0] != ssh.CipherChaCha20Poly1305 || len(got) != len(DefaultCiphers) {
		t.Fatalf("without AES hardware, client chose chacha20: %v", got)
	}
	if got := nodeCiphers(fakeMeta{cipher: ssh.CipherChaCha20Poly1305}, true, DefaultCiphers); !slices.Equal(got, DefaultCiphers) {
		t.Fatalf("with AES hardware: %v, want the configured order (AES-GCM first)", got)
	}
	if got := nodeCiphers(fakeMeta{cipher: "none"}, false, DefaultCiphers); !slices.Equal(got, DefaultCiphers) {
		t.Fatalf("unknown cipher: %v", got)
	}
}

func TestRelayStreams(t *testing.T) {
	addr, key := testGateway(t)
	c := dialAs(t, addr, "alice", key)
	defer c.Close()

	s, _ := c.NewSession()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if err := s.Run("out 3000000"); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 3000000 || errb.String() != "err" {
		t.Fatalf("stdout %d bytes, stderr %q; want 3000000 and \"err\"", out.Len(), errb.String())
	}

	s, _ = c.NewSession()
	s.Stdin = strings.NewReader("echoed through\n")
	got, err := s.Output("cat")
	if err != nil || string(got) != "echoed through\n" {
		t.Fatalf("cat: %q, %v", got, err)
	}
}

func TestRefusedKeyAndUnknownUser(t *testing.T) {
	addr, _ := testGateway(t)
	other, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), "x")
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "nobody", "../etc"} {
		var banners []string
		_, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
			User: user,
			Auth: []ssh.AuthMethod{ssh.PublicKeys(other), ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
				return nil, nil
			})},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			BannerCallback:  func(m string) error { banners = append(banners, m); return nil },
		})
		if err == nil {
			t.Fatalf("%s logged in with an unauthorized key", user)
		}
		if len(banners) != 2 || !strings.Contains(banners[0], "key "+ssh.FingerprintSHA256(other.PublicKey())+" is not authorized for") ||
			!strings.Contains(banners[1], "none of the keys you offered is authorized for") {
			t.Fatalf("%s: banners %q", user, banners)
		}
	}
}

// TestRefusedKeyOnlyClient is a client that offers keys and nothing else
// (ssh -o BatchMode=yes, git): it is told why, in one line, and the line
// is the same whether the user exists or not.
func TestRefusedKeyOnlyClient(t *testing.T) {
	addr, _ := testGateway(t)
	other, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), "x")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, user := range []string{"alice", "nobody"} {
		var banners []string
		_, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
			User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(other, other)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			BannerCallback:  func(m string) error { banners = append(banners, m); return nil },
		})
		if err == nil {
			t.Fatalf("%s logged in with an unauthorized key", user)
		}
		if len(banners) != 1 || !strings.HasPrefix(banners[0], "poolgate: key SHA256:") {
			t.Fatalf("%s: banners %q, want one poolgate: line", user, banners)
		}
		seen[user] = strings.Replace(banners[0], user, "USER", 1)
	}
	if seen["alice"] != seen["nobody"] {
		t.Fatalf("the refusal tells which user exists: %q vs %q", seen["alice"], seen["nobody"])
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := mkdirWrite(path, data); err != nil {
		t.Fatal(err)
	}
}
