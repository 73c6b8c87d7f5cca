package keyvault_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/gateway/keyvault"
	"github.com/poolgate/poolgate/gateway/keyvault/keyvaulttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake clock that Sleep moves on.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	slept  []time.Duration
	onWake func()
}

func newClock() *clock { return &clock{now: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.slept = append(c.slept, d)
	wake := c.onWake
	c.mu.Unlock()
	if wake != nil {
		wake()
	}
	return ctx.Err()
}

func (c *clock) sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.slept...)
}

func options(v *keyvaulttest.Vault, c *clock) keyvault.Options {
	return keyvault.Options{Credential: keyvaulttest.Credential(), Transport: v.Transport(), Now: c.Now, Sleep: c.Sleep}
}

// certSignedBy signs a user certificate with ca, as the gateway does, and
// checks it as sshd would: against the CA's public key.
func certSignedBy(t *testing.T, ca ssh.Signer) error {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	cert := &ssh.Certificate{Key: key, CertType: ssh.UserCert, KeyId: "test", ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return err
	}
	checker := ssh.CertChecker{IsUserAuthority: func(auth ssh.PublicKey) bool { return bytes.Equal(auth.Marshal(), ca.PublicKey().Marshal()) }}
	if err := checker.CheckCert("alice", cert); err != nil {
		t.Fatalf("certificate signed through Key Vault does not verify: %v", err)
	}
	return nil
}

func TestKeyVaultSignerSignsCertificatesThatVerify(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     func(testing.TB) crypto.Signer
		keyType string
		sigAlg  string
	}{
		{"EC P-256", keyvaulttest.P256, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA256},
		{"EC P-384", keyvaulttest.P384, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA384},
		{"RSA 3072", func(t testing.TB) crypto.Signer { return keyvaulttest.RSA(t, 3072) }, ssh.KeyAlgoRSA, ssh.KeyAlgoRSASHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := keyvaulttest.New()
			priv := tc.key(t)
			ver := v.AddKey("poolgate-user-ca", priv)
			s, err := keyvault.Open(context.Background(), v.URL, "poolgate-user-ca", "", options(v, newClock()))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(s.ID(), "/keys/poolgate-user-ca/"+ver) {
				t.Errorf("ID %q does not name the latest version %s", s.ID(), ver)
			}
			ca, err := s.SSHSigner()
			if err != nil {
				t.Fatal(err)
			}
			want, _ := ssh.NewPublicKey(priv.Public())
			if ca.PublicKey().Type() != tc.keyType || !bytes.Equal(ca.PublicKey().Marshal(), want.Marshal()) {
				t.Fatalf("public key %s, want the vault key's %s", ca.PublicKey().Type(), tc.keyType)
			}
			for i := 0; i < 3; i++ {
				if err := certSignedBy(t, ca); err != nil {
					t.Fatal(err)
				}
			}
			// The signature's algorithm is the one for the key (RSA: SHA-256,
			// never SHA-1).
			sig, err := ca.Sign(rand.Reader, []byte("data"))
			if err != nil || sig.Format != tc.sigAlg {
				t.Fatalf("signature %v %v, want %s", sig, err, tc.sigAlg)
			}
			if err := ca.PublicKey().Verify([]byte("data"), sig); err != nil {
				t.Fatalf("signature does not verify: %v", err)
			}
			// One fetch of the public key; one round trip per signature.
			if g, s := v.Calls(keyvaulttest.Get), v.Calls(keyvaulttest.Sign); g != 1 || s != 4 {
				t.Errorf("round trips: %d get, %d sign; want 1 and 4", g, s)
			}
		})
	}
}

func TestKeyVaultSignerKeepsItsVersionAfterRotation(t *testing.T) {
	v := keyvaulttest.New()
	old := keyvaulttest.P256(t)
	oldVer := v.AddKey("ca", old)
	s, err := keyvault.Open(context.Background(), v.URL, "ca", "", options(v, newClock()))
	if err != nil {
		t.Fatal(err)
	}
	v.AddKey("ca", keyvaulttest.P256(t)) // rotated while the gateway runs
	ca, _ := s.SSHSigner()
	if err := certSignedBy(t, ca); err != nil {
		t.Fatalf("signing after a rotation: %v", err)
	}
	// A named version is used even when it is not the latest.
	s2, err := keyvault.Open(context.Background(), v.URL, "ca", oldVer, options(v, newClock()))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ssh.NewPublicKey(old.Public())
	ca2, _ := s2.SSHSigner()
	if !bytes.Equal(ca2.PublicKey().Marshal(), want.Marshal()) {
		t.Error("version pinned in the config not used")
	}
}

func TestKeyVaultOpenRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*keyvaulttest.Vault)
		key   string
		want  []string
		is    error
	}{
		{"403", func(v *keyvaulttest.Vault) {
			v.AddKey("ca", keyvaulttest.P256(t))
			v.Fail(keyvaulttest.Get, http.StatusForbidden, 0, -1)
		}, "ca",
			[]string{"fetching the public key", "key ca in pool-kv.vault.azure.net", "403", "Key Vault Crypto User"}, keyvault.ErrDenied},
		{"404", func(v *keyvaulttest.Vault) {}, "missing",
			[]string{"key missing in pool-kv.vault.azure.net", "404", "ca.key_vault"}, keyvault.ErrNotFound},
		{"Ed25519 or other", func(v *keyvaulttest.Vault) { _, p, _ := ed25519.GenerateKey(rand.Reader); v.AddKey("ca", p) }, "ca",
			[]string{"not supported", "no Ed25519"}, nil},
		{"small RSA", func(v *keyvaulttest.Vault) { v.AddKey("ca", keyvaulttest.RSA(t, 2048)) }, "ca",
			[]string{"2048 bits is too small", "3072"}, nil},
		{"P-521", func(v *keyvaulttest.Vault) { v.AddKey("ca", keyvaulttest.ECKey(t, "P-521")) }, "ca",
			[]string{"P-521 is not supported"}, nil},
		{"disabled", func(v *keyvaulttest.Vault) { v.AddKey("ca", keyvaulttest.P256(t)); v.Disable("ca") }, "ca",
			[]string{"disabled"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := keyvaulttest.New()
			tc.setup(v)
			c := newClock()
			_, err := keyvault.Open(context.Background(), v.URL, tc.key, "", options(v, c))
			if err == nil {
				t.Fatal("opened")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if len(c.sleeps()) != 0 {
				t.Errorf("a refusal was retried: %v", c.sleeps())
			}
		})
	}
}

func TestKeyVaultSignRetriesThrottlingThenSucceeds(t *testing.T) {
	v := keyvaulttest.New()
	v.AddKey("ca", keyvaulttest.P256(t))
	c := newClock()
	s, err := keyvault.Open(context.Background(), v.URL, "ca", "", options(v, c))
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := s.SSHSigner()
	v.Fail(keyvaulttest.Sign, http.StatusTooManyRequests, time.Second, 2)
	if err := certSignedBy(t, ca); err != nil {
		t.Fatalf("after two 429s: %v", err)
	}
	if got := c.sleeps(); len(got) != 2 || got[0] != time.Second || got[1] != time.Second {
		t.Errorf("waits %v, want Retry-After's 1s twice", got)
	}
	if n := v.Calls(keyvaulttest.Sign); n != 3 {
		t.Errorf("%d sign calls, want 3", n)
	}

	// Without Retry-After, Key Vault's guidance: 1 s, then 2 s.
	c.slept = nil
	v.Fail(keyvaulttest.Sign, http.StatusTooManyRequests, 0, 2)
	if err := certSignedBy(t, ca); err != nil {
		t.Fatal(err)
	}
	if got := c.sleeps(); len(got) != 2 || got[0] != time.Second || got[1] != 2*time.Second {
		t.Errorf("waits %v, want 1s then 2s", got)
	}
}

func TestKeyVaultSignGivesUpWithinTheBudget(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter time.Duration
		is         error
		want       []string
	}{
		{"503 for longer than the budget", http.StatusServiceUnavailable, 0, keyvault.ErrUnavailable, []string{"signing", "503", "tries in", "budget is 4s"}},
		{"429 asking to wait past the budget", http.StatusTooManyRequests, 30 * time.Second, keyvault.ErrThrottled, []string{"signing", "429", "1 try", "asked to wait 30s"}},
		{"403", http.StatusForbidden, 0, keyvault.ErrDenied, []string{"signing", "403", "Key Vault Crypto User"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := keyvaulttest.New()
			v.AddKey("poolgate-user-ca", keyvaulttest.P256(t))
			c := newClock()
			s, err := keyvault.Open(context.Background(), v.URL, "poolgate-user-ca", "", options(v, c))
			if err != nil {
				t.Fatal(err)
			}
			ca, _ := s.SSHSigner()
			v.Fail(keyvaulttest.Sign, tc.status, tc.retryAfter, -1)
			start := c.Now()
			err = certSignedBy(t, ca)
			if err == nil {
				t.Fatal("signed while Key Vault fails")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, w := range append(tc.want, "key poolgate-user-ca/", "in pool-kv.vault.azure.net") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if waited := c.Now().Sub(start); waited > keyvault.DefaultBudget {
				t.Errorf("waited %s, more than the budget", waited)
			}
			// It recovers once Key Vault answers again.
			v.Recover()
			if err := certSignedBy(t, ca); err != nil {
				t.Errorf("after recovery: %v", err)
			}
		})
	}
}

func TestKeyVaultSignBudgetEndsAHungCall(t *testing.T) {
	v := keyvaulttest.New()
	v.AddKey("ca", keyvaulttest.P256(t))
	o := keyvault.Options{Credential: keyvaulttest.Credential(), Transport: v.Transport(), Budget: 50 * time.Millisecond}
	s, err := keyvault.Open(context.Background(), v.URL, "ca", "", o)
	if err != nil {
		t.Fatal(err)
	}
	v.SetDelay(time.Minute)
	_, err = s.Sign(nil, keyvaulttest.Digest(crypto.SHA256, []byte("x")), crypto.SHA256)
	if !errors.Is(err, keyvault.ErrUnavailable) || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Errorf("hung Key Vault: %v", err)
	}
}

func TestKeyVaultSignRefusesMismatchedHashes(t *testing.T) {
	v := keyvaulttest.New()
	v.AddKey("ca", keyvaulttest.P384(t))
	s, err := keyvault.Open(context.Background(), v.URL, "ca", "", options(v, newClock()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(nil, keyvaulttest.Digest(crypto.SHA256, nil), crypto.SHA256); err == nil || !strings.Contains(err.Error(), "no ECDSA algorithm for P-384") {
		t.Errorf("P-384 with SHA-256: %v", err)
	}
	if v.Calls(keyvaulttest.Sign) != 0 {
		t.Error("a refused hash reached Key Vault")
	}
}
