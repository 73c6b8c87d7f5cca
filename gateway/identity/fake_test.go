package identity

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fakeEntra is an Entra ID tenant's v2.0 endpoints on 127.0.0.1, built
// from Microsoft's documented payloads (device code flow, ID tokens,
// discovery): discovery, keys, /devicecode and /token.
type fakeEntra struct {
	t      *testing.T
	srv    *httptest.Server
	issuer string // srv.URL + "/TENANT/v2.0"

	mu sync.Mutex // protects everything below
	// keys are published in the JWKS, by kid; signKid signs tokens.
	keys    map[string]*rsa.PrivateKey
	signKid string
	// signWith, when set, signs with a key not published.
	signWith *rsa.PrivateKey
	// polls are the token endpoint's answers to device-code polls in
	// order; the last repeats. "ok" answers with tokens; any other word
	// is an error code answered as Entra does.
	polls []string
	// claims are merged over the default claims of issued ID tokens
	// (nil values delete a claim).
	claims       map[string]any
	noDevice     bool // discovery without device_authorization_endpoint
	noMessage    bool // device response without message (a generic RFC 8628 provider)
	slow         chan struct{}
	deviceCalls  int
	tokenCalls   int
	jwksCalls    int
	lastDevice   string // form of the last /devicecode request
	challenge    string // code_challenge of the browser code "good-code"
	nonce        string
	secret       string // client_secret required at the token endpoint; "" none
	issuedTokens []string
}

const (
	testClientID   = "11111111-2222-3333-4444-555555555555"
	testDeviceCode = "GMMhmHCXhWEzkobqIHGG_EnNYYsAkukHspeYUk9E8"
	testUserCode   = "FQK4XZ2B"
	testMessage    = "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code FQK4XZ2B to authenticate."
)

func newFakeEntra(t *testing.T) *fakeEntra {
	t.Helper()
	f := &fakeEntra{t: t, keys: map[string]*rsa.PrivateKey{}, polls: []string{"ok"}, claims: map[string]any{}}
	f.rotate()
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.close)
	f.issuer = f.srv.URL + "/TENANT/v2.0"
	return f
}

func (f *fakeEntra) close() {
	f.mu.Lock()
	if f.slow != nil {
		close(f.slow)
		f.slow = nil
	}
	f.mu.Unlock()
	f.srv.Close()
}

// rotate adds a new signing key, published with the old ones.
func (f *fakeEntra) rotate() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	kid := fmt.Sprintf("kid-%d", len(f.keys)+1)
	f.keys[kid], f.signKid = k, kid
	return kid
}

// blockAll makes every endpoint hang until the test ends.
func (f *fakeEntra) blockAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slow = make(chan struct{})
}

func (f *fakeEntra) setPolls(p ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls = p
}

func (f *fakeEntra) setClaim(k string, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims[k] = v
}

func (f *fakeEntra) counts() (device, token, jwks int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deviceCalls, f.tokenCalls, f.jwksCalls
}

func (f *fakeEntra) config() Config {
	return Config{OIDC: OIDCConfig{Issuer: f.issuer, ClientID: testClientID}}
}

// provider returns a Provider on the fake whose polls do not wait (each
// wait is recorded in waits), logging into logs.
func (f *fakeEntra) provider(cfg Config) (*Provider, *[]time.Duration, *observer.ObservedLogs) {
	f.t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	tr := &http.Transport{}
	f.t.Cleanup(tr.CloseIdleConnections)
	p, err := New(cfg, Options{HTTPClient: &http.Client{Transport: tr}, Logger: zap.New(core)})
	if err != nil {
		f.t.Fatal(err)
	}
	var mu sync.Mutex
	waits := &[]time.Duration{}
	p.after = func(d time.Duration) <-chan time.Time {
		mu.Lock()
		*waits = append(*waits, d)
		mu.Unlock()
		c := make(chan time.Time, 1)
		c <- time.Now()
		return c
	}
	return p, waits, logs
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// entraError answers as Entra ID's token endpoint does (HTTP 400, with
// AADSTS codes and trace lines in the description).
func entraError(w http.ResponseWriter, code string) {
	aadsts := map[string]int{
		"authorization_pending": 70016, "authorization_declined": 70000, "bad_verification_code": 70000,
		"expired_token": 70020, "slow_down": 70016, "invalid_grant": 70000, "access_denied": 70000,
	}[code]
	writeJSON(w, http.StatusBadRequest, map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: OAuth 2.0 device flow error.\r\nTrace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333\r\nCorrelation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2026-12-07 10:00:00Z", aadsts),
		"error_codes":       []int{aadsts},
		"timestamp":         "2026-12-07 10:00:00Z",
		"trace_id":          "0000aaaa-11bb-cccc-dd22-eeeeee333333",
		"correlation_id":    "aaaa0000-bb11-2222-33cc-444444dddddd",
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
}

func (f *fakeEntra) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	slow := f.slow
	f.mu.Unlock()
	if slow != nil {
		select {
		case <-slow:
		case <-r.Context().Done():
		}
		return
	}
	base := f.srv.URL + "/TENANT"
	switch r.URL.Path {
	case "/TENANT/v2.0/.well-known/openid-configuration":
		doc := map[string]any{
			"token_endpoint":                        base + "/oauth2/v2.0/token",
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
			"jwks_uri":                              base + "/discovery/v2.0/keys",
			"response_modes_supported":              []string{"query", "fragment", "form_post"},
			"subject_types_supported":               []string{"pairwise"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
			"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
			"issuer":                                f.issuer,
			"request_uri_parameter_supported":       false,
			"userinfo_endpoint":                     "https://graph.microsoft.invalid/oidc/userinfo",
			"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
			"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
			"http_logout_supported":                 true,
			"frontchannel_logout_supported":         true,
			"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
			"claims_supported":                      []string{"sub", "iss", "aud", "exp", "iat", "preferred_username", "name", "oid", "tid", "groups"},
			"tenant_region_scope":                   "EU",
			"cloud_instance_name":                   "microsoftonline.com",
		}
		f.mu.Lock()
		if f.noDevice {
			delete(doc, "device_authorization_endpoint")
		}
		f.mu.Unlock()
		writeJSON(w, 200, doc)
	case "/TENANT/discovery/v2.0/keys":
		f.mu.Lock()
		f.jwksCalls++
		var keys []map[string]any
		for kid, k := range f.keys {
			keys = append(keys, map[string]any{
				"kty": "RSA", "use": "sig", "kid": kid,
				"n":      base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e":      base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
				"issuer": f.issuer,
			})
		}
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"keys": keys})
	case "/TENANT/oauth2/v2.0/devicecode":
		_ = r.ParseForm()
		f.mu.Lock()
		f.deviceCalls++
		f.lastDevice = r.PostForm.Encode()
		noMsg := f.noMessage
		f.mu.Unlock()
		if r.PostForm.Get("client_id") != testClientID {
			writeJSON(w, 400, map[string]any{"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found.\r\nTrace ID: x", "error_codes": []int{700016}})
			return
		}
		resp := map[string]any{
			"user_code": testUserCode, "device_code": testDeviceCode,
			"verification_uri": "https://microsoft.com/devicelogin",
			"expires_in":       900, "interval": 5, "message": testMessage,
		}
		if noMsg {
			delete(resp, "message")
			resp["verification_uri_complete"] = "https://example.test/device?user_code=" + testUserCode
		}
		writeJSON(w, 200, resp)
	case "/TENANT/oauth2/v2.0/token":
		f.token(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeEntra) token(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	form := r.PostForm
	f.mu.Lock()
	f.tokenCalls++
	secret := f.secret
	f.mu.Unlock()
	if form.Get("client_id") != testClientID {
		entraError(w, "invalid_client")
		return
	}
	switch form.Get("grant_type") {
	case "urn:ietf:params:oauth:grant-type:device_code":
		if form.Get("device_code") != testDeviceCode {
			entraError(w, "bad_verification_code")
			return
		}
		f.mu.Lock()
		next := f.polls[0]
		if len(f.polls) > 1 {
			f.polls = f.polls[1:]
		}
		f.mu.Unlock()
		if next != "ok" {
			entraError(w, next)
			return
		}
		f.issue(w, "")
	case "authorization_code":
		if secret != "" && form.Get("client_secret") != secret {
			entraError(w, "invalid_client")
			return
		}
		sum := sha256.Sum256([]byte(form.Get("code_verifier")))
		f.mu.Lock()
		challenge, nonce := f.challenge, f.nonce
		f.mu.Unlock()
		if form.Get("code") != "good-code" || base64.RawURLEncoding.EncodeToString(sum[:]) != challenge {
			entraError(w, "invalid_grant")
			return
		}
		f.issue(w, nonce)
	default:
		entraError(w, "unsupported_grant_type")
	}
}

// issue answers with a token response whose ID token carries Entra ID's
// v2.0 claims.
func (f *fakeEntra) issue(w http.ResponseWriter, nonce string) {
	now := time.Now()
	claims := map[string]any{
		"ver": "2.0", "iss": f.issuer, "aud": testClientID,
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"name": "Alice Smith", "preferred_username": "Alice@contoso.com",
		"oid": "00000000-0000-0000-66f3-3332eca7ea81", "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
		"tid": "9122040d-6c67-4c5b-b112-36a304b66dad", "email": "alice@contoso.com",
		"groups": []string{"aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb", "cccccccc-3333-4444-5555-dddddddddddd"},
		"uti":    "fqiBqXLPj0eQa82S-IYFAA", "rh": "0.AXEA",
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	f.mu.Lock()
	for k, v := range f.claims {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	f.mu.Unlock()
	idt := f.sign(claims)
	f.mu.Lock()
	f.issuedTokens = append(f.issuedTokens, idt)
	f.mu.Unlock()
	writeJSON(w, 200, map[string]any{
		"token_type": "Bearer", "scope": "openid profile email", "expires_in": 3599, "ext_expires_in": 3599,
		"access_token": "eyJ0eXAiOiJKV1QiLCJub25jZSI6ImFjY2Vzcy10b2tlbi1ub3QtZm9yLXVzIn0.e30.c2lnbmF0dXJl",
		"id_token":     idt,
	})
}

// sign makes an RS256 JWT of claims with the current key (or signWith).
func (f *fakeEntra) sign(claims map[string]any) string {
	f.mu.Lock()
	kid, key := f.signKid, f.keys[f.signKid]
	if f.signWith != nil {
		kid, key = "kid-unpublished", f.signWith
	}
	f.mu.Unlock()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			f.t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]any{"typ": "JWT", "alg": "RS256", "kid": kid, "x5t": kid}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		f.t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// tokensIn reports whether s holds any issued token or the device code.
func (f *fakeEntra) secretsIn(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.issuedTokens {
		if strings.Contains(s, t) || strings.Contains(s, strings.Split(t, ".")[2]) {
			return true
		}
	}
	return strings.Contains(s, testDeviceCode)
}
