package sshgw

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/gateway/keyvault/keyvaulttest"
	pgtestutil "github.com/poolgate/poolgate/internal/testutil"
)

// countingCA counts the signatures of a CA.
type countingCA struct {
	ssh.Signer
	n atomic.Int32
}

func (c *countingCA) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	c.n.Add(1)
	return c.Signer.Sign(rand, data)
}

func certOf(t *testing.T, s ssh.Signer) *ssh.Certificate {
	t.Helper()
	cert, ok := s.PublicKey().(*ssh.Certificate)
	if !ok {
		t.Fatalf("signer holds %T, not a certificate", s.PublicKey())
	}
	return cert
}

func TestCertIssuerReusesOnlyTheSameCertificate(t *testing.T) {
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "ca"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	ca := &countingCA{Signer: key}
	now := time.Unix(1_800_000_000, 0)
	ci := newCertIssuer(ca, -1, func() time.Time { return now }, nil)
	issue := func(user, keyID string, r restrictions) ssh.Signer {
		t.Helper()
		s, err := ci.issue(user, keyID, r)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := issue("alice", "k1", restrictions{})
	for _, tt := range []struct {
		name   string
		user   string
		keyID  string
		r      restrictions
		after  time.Duration
		reused bool
	}{
		{"same login", "alice", "k1", restrictions{}, 0, true},
		{"same login later, more than half left", "alice", "k1", restrictions{}, CertValidity/2 - time.Second, true},
		{"force-command", "alice", "k1", restrictions{command: "backup"}, 0, false},
		{"another force-command", "alice", "k1", restrictions{command: "backup2"}, 0, false},
		{"no-pty", "alice", "k1", restrictions{noPTY: true}, 0, false},
		{"no-port-forwarding", "alice", "k1", restrictions{noPortForwarding: true}, 0, false},
		{"another key", "alice", "k2", restrictions{}, 0, false},
		{"another user", "bob", "k1", restrictions{}, 0, false},
		{"half the validity gone", "alice", "k1", restrictions{}, CertValidity / 2, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now = time.Unix(1_800_000_000, 0).Add(tt.after)
			before := ca.n.Load()
			got := issue(tt.user, tt.keyID, tt.r)
			if reused := got == first; reused != tt.reused {
				t.Fatalf("reused %v, want %v", reused, tt.reused)
			}
			if signed := ca.n.Load() - before; signed != map[bool]int32{true: 0, false: 1}[tt.reused] {
				t.Fatalf("%d signatures", signed)
			}
			cert := certOf(t, got)
			want := tt.r.certPermissions()
			if cert.ValidPrincipals[0] != tt.user || cert.KeyId != tt.keyID || permsKey(cert.Permissions) != permsKey(want) {
				t.Fatalf("certificate for %v %q %v, want %s %q %v", cert.ValidPrincipals, cert.KeyId, cert.Permissions, tt.user, tt.keyID, want)
			}
			// The restricted certificate is reused too, still restricted.
			if again := issue(tt.user, tt.keyID, tt.r); again != got {
				t.Fatal("the certificate just signed was not reused")
			}
		})
	}
}

func TestCertIssuerLimitsSignaturesPerUser(t *testing.T) {
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "ca"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	ci := newCertIssuer(key, 3, func() time.Time { return now }, nil)
	for i, id := range []string{"k1", "k2", "k3"} {
		if _, err := ci.issue("alice", id, restrictions{}); err != nil {
			t.Fatalf("signature %d: %v", i+1, err)
		}
	}
	if _, err := ci.issue("alice", "k1", restrictions{}); err != nil {
		t.Fatalf("a reused certificate costs no signature, yet: %v", err)
	}
	_, err = ci.issue("alice", "k4", restrictions{})
	var be *ssh.BannerError
	if !errors.Is(err, errSignLimit) || !errors.As(err, &be) || !strings.HasPrefix(be.Message, "poolgate: too many logins for alice") {
		t.Fatalf("fourth signature in a minute: %v", err)
	}
	if _, err := ci.issue("bob", "k4", restrictions{}); err != nil {
		t.Fatalf("bob is limited by alice's logins: %v", err)
	}
	now = now.Add(20 * time.Second) // one signature back
	if _, err := ci.issue("alice", "k4", restrictions{}); err != nil {
		t.Fatalf("after 20s: %v", err)
	}
	if _, err := ci.issue("alice", "k5", restrictions{}); !errors.Is(err, errSignLimit) {
		t.Fatalf("second signature after 20s: %v", err)
	}
}

// slowCA signs, or fails, once release is closed.
type slowCA struct {
	countingCA
	fail    bool
	release chan struct{}
}

func (c *slowCA) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	<-c.release
	if c.fail {
		c.n.Add(1)
		return nil, errors.New("the CA failed")
	}
	return c.countingCA.Sign(rand, data)
}

func TestCertIssuerConcurrentLoginsShareOneSignature(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "ok", true: "failing CA"}[fail], func(t *testing.T) {
			key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "ca"), "ca")
			if err != nil {
				t.Fatal(err)
			}
			ca := &slowCA{countingCA: countingCA{Signer: key}, fail: fail, release: make(chan struct{})}
			// A limit of 2 would refuse most of these, were each to sign.
			ci := newCertIssuer(ca, 2, time.Now, nil)
			const n = 10
			errs := make(chan error, n)
			var started atomic.Int32
			for i := 0; i < n; i++ {
				go func() {
					started.Add(1)
					_, err := ci.issue("alice", "k1", restrictions{})
					errs <- err
				}()
			}
			for started.Load() < n {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // all are asking: one signs, the others wait
			close(ca.release)
			for i := 0; i < n; i++ {
				if err := <-errs; (err != nil) != fail || errors.Is(err, errSignLimit) {
					t.Errorf("login %d: %v", i, err)
				}
			}
			if got := ca.n.Load(); got != 1 {
				t.Errorf("%d signatures for %d logins at once, want 1", got, n)
			}
			if fail {
				if _, err := ci.issue("alice", "k1", restrictions{}); err == nil || ca.n.Load() != 2 {
					t.Errorf("a failed signature was cached: %v, %d signatures", err, ca.n.Load())
				}
			}
		})
	}
}

func TestCertIssuerStaysBounded(t *testing.T) {
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "ca"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	ci := newCertIssuer(key, -1, func() time.Time { return now }, nil)
	for i := 0; i < maxCachedCerts+10; i++ {
		if _, err := ci.issue("alice", string(rune('a'+i%26))+strings.Repeat("x", i/26), restrictions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(ci.certs); n > maxCachedCerts {
		t.Fatalf("%d certificates cached, bound %d", n, maxCachedCerts)
	}
}

// kvMetricsGW runs a gateway with its CA in the fake vault and metrics on
// a registry of its own; keys is alice's authorized_keys file.
func kvMetricsGW(t *testing.T, adjust func(*Config)) (v *keyvaulttest.Vault, g *testGW, m *Metrics, keys string) {
	t.Helper()
	v, ca := kvCA(t)
	reg := prometheus.NewRegistry()
	m = NewMetrics(reg, nil)
	g = startTestGW(t, testGWOptions{ca: ca, metrics: m, adjust: func(c *Config) {
		keys = c.AuthorizedKeys.Path("alice")
		if adjust != nil {
			adjust(c)
		}
	}})
	g.reg = reg
	return v, g, m, keys
}

// addKey appends a new key with options to alice's authorized_keys.
func addKey(t *testing.T, file, options string) ssh.Signer {
	t.Helper()
	k, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), "k")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(options + " " + string(ssh.MarshalAuthorizedKey(k.PublicKey()))); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyVaultRepeatedLoginsReuseTheCertificate(t *testing.T) {
	v, g, m, keys := kvMetricsGW(t, nil)
	for i := 0; i < 20; i++ {
		if banner, err := login(t, g, "alice"); err != nil {
			t.Fatalf("login %d: %v (banner %q)", i+1, err, banner)
		}
	}
	if n := v.Calls(keyvaulttest.Sign); n != 1 {
		t.Errorf("%d Key Vault signatures for 20 logins in a row, want 1", n)
	}
	if got := testutil.ToFloat64(m.reused); got != 19 {
		t.Errorf("poolgate_ca_signatures_reused_total = %v, want 19", got)
	}
	// A restricted key gets a certificate of its own. (The test node's
	// checker refuses force-command; TestCertIssuerReusesOnlyTheSameCertificate
	// covers it.)
	restricted := addKey(t, keys, "no-pty,no-port-forwarding")
	for i := 0; i < 2; i++ {
		c, banner, err := dialBanner(g.addr, "alice", restricted)
		if err != nil {
			t.Fatalf("login with the restricted key: %v (banner %q)", err, banner)
		}
		c.Close()
	}
	if n := v.Calls(keyvaulttest.Sign); n != 2 {
		t.Errorf("%d Key Vault signatures after a restricted key logged in twice, want 2", n)
	}
	if got := testutil.ToFloat64(m.signatures.WithLabelValues("ok")); got != 2 {
		t.Errorf(`poolgate_ca_signatures_total{result="ok"} = %v, want 2`, got)
	}
}

func TestSignatureLimitTellsTheUser(t *testing.T) {
	v, g, _, keys := kvMetricsGW(t, func(c *Config) { c.SignaturesPerUserPerMinute = 1 })
	if banner, err := login(t, g, "alice"); err != nil {
		t.Fatalf("first login: %v (banner %q)", err, banner)
	}
	other := addKey(t, keys, "no-pty")
	c, banner, err := dialBanner(g.addr, "alice", other)
	if err == nil {
		c.Close()
		t.Fatal("a second signature within the minute was allowed")
	}
	if !strings.Contains(banner, "poolgate: too many logins for alice in the last minute") {
		t.Errorf("banner %q, want the poolgate: line", banner)
	}
	if n := v.Calls(keyvaulttest.Sign); n != 1 {
		t.Errorf("%d Key Vault signatures, want 1", n)
	}
	if n := g.bal.UserSessions("alice"); n != 0 {
		t.Errorf("a refused login left %d sessions", n)
	}
	if got := pgtestutil.MetricValue(t, g.reg, "poolgate_login_refusals_total", "protocol", "ssh", "reason", "signature_limit"); got != 1 {
		t.Errorf(`poolgate_login_refusals_total{protocol="ssh",reason="signature_limit"} = %v, want 1`, got)
	}
	// The certificate already signed is still reused.
	if banner, err := login(t, g, "alice"); err != nil {
		t.Fatalf("login with the first key again: %v (banner %q)", err, banner)
	}
}

func TestKeyVaultThrottlingShowsInMetrics(t *testing.T) {
	v, g, m, _ := kvMetricsGW(t, nil)
	v.Fail(keyvaulttest.Sign, http.StatusTooManyRequests, 0, -1)
	if _, err := login(t, g, "alice"); err == nil {
		t.Fatal("logged in while Key Vault throttles")
	}
	v.Fail(keyvaulttest.Sign, http.StatusForbidden, 0, -1)
	if _, err := login(t, g, "alice"); err == nil {
		t.Fatal("logged in while Key Vault refuses")
	}
	v.Recover()
	if banner, err := login(t, g, "alice"); err != nil {
		t.Fatalf("after recovery: %v (banner %q)", err, banner)
	}
	for result, want := range map[string]float64{"throttled": 1, "error": 1, "ok": 1} {
		if got := testutil.ToFloat64(m.signatures.WithLabelValues(result)); got != want {
			t.Errorf(`poolgate_ca_signatures_total{result=%q} = %v, want %v`, result, got, want)
		}
	}
}
