// Package identitytest is a tiny OpenID provider on 127.0.0.1 for the
// tests of the packages that use the browser sign-in (identity.Web):
// discovery, keys, an authorization endpoint that signs the configured
// user in at once and redirects back with a code, and a token endpoint
// that redeems it (PKCE S256 checked, nonce carried into the ID token).
// It is not a provider to run: the identity package's own tests play
// Entra ID's payloads in full.
package identitytest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/poolgate/poolgate/gateway/identity"
)

// ClientID is the application the provider knows.
const ClientID = "poolgate-test-client"

// Provider is the fake provider. Its zero value is not usable: call New.
type Provider struct {
	// Issuer is the provider's issuer URL (its server's base URL).
	Issuer string

	t   testing.TB
	srv *httptest.Server
	key *rsa.PrivateKey

	mu     sync.Mutex       // protects claims, deny, codes
	claims map[string]any   // of the next ID tokens, over the defaults
	deny   bool             // the user declines at the authorization endpoint
	codes  map[string]grant // codes issued and not yet redeemed
}

// grant is what an authorization code was issued for.
type grant struct {
	nonce, challenge, redirect string
}

// New starts a provider that signs in "alice" (preferred_username
// alice@example.com, name "Alice Example"); it stops when the test ends.
func New(t testing.TB) *Provider {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{t: t, key: key, codes: map[string]grant{}}
	p.SetUser("alice@example.com", "Alice Example", "sub-alice")
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	p.Issuer = p.srv.URL
	return p
}

// Config is the identity section for this provider.
func (p *Provider) Config() identity.Config {
	return identity.Config{OIDC: identity.OIDCConfig{Issuer: p.Issuer, ClientID: ClientID}}
}

// SetUser makes the next sign-ins those of the account with this
// preferred_username, display name and subject.
func (p *Provider) SetUser(preferredUsername, name, subject string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claims = map[string]any{"preferred_username": preferredUsername, "name": name, "sub": subject}
}

// SetClaim sets one claim of the next ID tokens (nil deletes it).
func (p *Provider) SetClaim(k string, v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claims[k] = v
}

// Deny makes the user decline the next sign-ins (error=access_denied).
func (p *Provider) Deny(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deny = on
}

func (p *Provider) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer":                                p.Issuer,
			"authorization_endpoint":                p.Issuer + "/authorize",
			"token_endpoint":                        p.Issuer + "/token",
			"jwks_uri":                              p.Issuer + "/keys",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"code_challenge_methods_supported":      []string{"S256"},
		})
	case "/keys":
		writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
			"n": base64.RawURLEncoding.EncodeToString(p.key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(p.key.E)).Bytes()),
		}}})
	case "/authorize":
		p.authorize(w, r)
	case "/token":
		p.token(w, r)
	default:
		http.NotFound(w, r)
	}
}

// authorize signs the user in at once and sends the browser back to the
// redirect URI with a code (or an error when Deny is on).
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || back.Scheme == "" || q.Get("client_id") != ClientID || q.Get("response_type") != "code" ||
		q.Get("code_challenge_method") != "S256" || q.Get("state") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	v := url.Values{"state": {q.Get("state")}}
	p.mu.Lock()
	if p.deny {
		v.Set("error", "access_denied")
	} else {
		code := rand.Text()
		p.codes[code] = grant{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: back.String()}
		v.Set("code", code)
	}
	p.mu.Unlock()
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// token redeems a code once, for the verifier and redirect URI it was
// issued for.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "authorization_code" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	f := r.PostForm
	client := f.Get("client_id")
	if id, _, ok := r.BasicAuth(); ok {
		client, _ = url.QueryUnescape(id)
	}
	p.mu.Lock()
	g, ok := p.codes[f.Get("code")]
	delete(p.codes, f.Get("code"))
	claims := map[string]any{}
	for k, v := range p.claims {
		claims[k] = v
	}
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	if !ok || client != ClientID || f.Get("redirect_uri") != g.redirect ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
		return
	}
	now := time.Now()
	for k, v := range map[string]any{"iss": p.Issuer, "aud": ClientID, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "nonce": g.nonce} {
		if _, set := claims[k]; !set {
			claims[k] = v
		}
	}
	for k, v := range claims {
		if v == nil {
			delete(claims, k)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "expires_in": 3600, "access_token": "not-for-the-gateway", "id_token": p.sign(claims),
	})
}

// sign makes an RS256 JWT of claims.
func (p *Provider) sign(claims map[string]any) string {
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			p.t.Error(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]any{"typ": "JWT", "alg": "RS256", "kid": "k1"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, p.key, crypto.SHA256, sum[:])
	if err != nil {
		p.t.Error(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
