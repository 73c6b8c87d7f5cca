package identity

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// authorize plays the provider's sign-in page: it keeps the challenge and
// nonce of the authorization URL for the code "good-code".
func (f *fakeEntra) authorize(t *testing.T, authURL string) url.Values {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(authURL, f.srv.URL+"/TENANT/oauth2/v2.0/authorize?") {
		t.Fatalf("auth URL %s", authURL)
	}
	q := u.Query()
	f.mu.Lock()
	f.challenge, f.nonce = q.Get("code_challenge"), q.Get("nonce")
	f.mu.Unlock()
	return q
}

func TestBrowserSignIn(t *testing.T) {
	f := newFakeEntra(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.secret = "s3cret"
	cfg := f.config()
	cfg.OIDC.ClientSecretFile = secret
	cfg.OpsGroups = []string{"cccccccc-3333-4444-5555-dddddddddddd"}
	p, _, logs := f.provider(cfg)
	ctx := context.Background()
	const redirect = "https://pool.example.com/_poolgate/callback"

	verifier, nonce := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	authURL, err := p.AuthCodeURL(ctx, "state-1", nonce, verifier, redirect)
	if err != nil {
		t.Fatal(err)
	}
	q := f.authorize(t, authURL)
	for k, want := range map[string]string{
		"client_id": testClientID, "redirect_uri": redirect, "response_type": "code", "state": "state-1",
		"nonce": nonce, "code_challenge_method": "S256", "code_challenge": oauth2.S256ChallengeFromVerifier(verifier),
		"scope": "openid profile email",
	} {
		if q.Get(k) != want {
			t.Errorf("auth URL %s = %q, want %q", k, q.Get(k), want)
		}
	}

	id, err := p.Exchange(ctx, "good-code", nonce, verifier, redirect, addr("192.0.2.9"))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if id.User != "alice" || !p.Config().IsOps(id) {
		t.Errorf("identity = %+v, ops %v", id, p.Config().IsOps(id))
	}
	if !strings.Contains(logText(logs), "method=browser") || f.secretsIn(logText(logs)) {
		t.Errorf("log:\n%s", logText(logs))
	}

	for _, tt := range []struct {
		name                  string
		code, nonce, verifier string
	}{
		{"wrong verifier", "good-code", nonce, oauth2.GenerateVerifier()},
		{"wrong code", "bad-code", nonce, verifier},
		{"wrong nonce", "good-code", "other-nonce", verifier},
		{"no code", "", nonce, verifier},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := p.Exchange(ctx, tt.code, tt.nonce, tt.verifier, redirect, addr("192.0.2.9")); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Exchange = %v, want ErrInvalidToken", err)
			}
		})
	}

	f.mu.Lock()
	f.secret = "rotated"
	f.mu.Unlock()
	if _, err := p.Exchange(ctx, "good-code", nonce, verifier, redirect, addr("192.0.2.9")); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Exchange with a wrong client secret = %v", err)
	}
	if _, err := p.AuthCodeURL(ctx, "", nonce, verifier, redirect); err == nil {
		t.Error("AuthCodeURL without state succeeded")
	}
}
