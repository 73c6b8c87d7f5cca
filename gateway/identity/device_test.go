package identity

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func addr(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 50022} }

// signIn runs a device sign-in from 192.0.2.1 to its end.
func signIn(t *testing.T, p *Provider) (*DeviceSignIn, *Identity, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := p.StartDevice(ctx, "alice", addr("192.0.2.1"))
	if err != nil {
		t.Fatalf("StartDevice: %v", err)
	}
	id, err := s.Wait(ctx)
	return s, id, err
}

// logText is every logged message and field, for checks on secrets.
func logText(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		b.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			b.WriteString(" " + k + "=")
			b.WriteString(strings.ReplaceAll(strings.TrimSpace(strings.Trim(strings.ReplaceAll(toString(v), "\n", " "), " ")), "\x00", ""))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case error:
		return v.Error()
	default:
		return strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(fmtAny(v), "\n", " "), "\t", " "))
	}
}

func TestDeviceSignInPendingSlowDownSuccess(t *testing.T) {
	f := newFakeEntra(t)
	f.setPolls("authorization_pending", "slow_down", "authorization_pending", "ok")
	p, waits, logs := f.provider(f.config())
	s, id, err := signIn(t, p)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if s.Message != testMessage {
		t.Errorf("Message = %q, want Entra's own words %q", s.Message, testMessage)
	}
	if s.UserCode != testUserCode || s.VerificationURI != "https://microsoft.com/devicelogin" || s.Interval != 5*time.Second {
		t.Errorf("sign-in = %+v", s)
	}
	if d := time.Until(s.Expiry); d < 14*time.Minute || d > 15*time.Minute {
		t.Errorf("Expiry in %s, want 15m", d)
	}
	// interval 5s; slow_down adds 5s for this and all later polls.
	if want := []time.Duration{5 * time.Second, 5 * time.Second, 10 * time.Second, 10 * time.Second}; !slices.Equal(*waits, want) {
		t.Errorf("waits = %v, want %v", *waits, want)
	}
	if id.User != "alice" || id.Subject != "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ" || id.Issuer != f.issuer ||
		id.ObjectID != "00000000-0000-0000-66f3-3332eca7ea81" || id.Name != "Alice Smith" || len(id.Groups) != 2 || id.GroupsOverage {
		t.Errorf("identity = %+v", id)
	}
	if _, token, _ := f.counts(); token != 4 {
		t.Errorf("token endpoint polled %d times, want 4", token)
	}
	f.mu.Lock()
	form := f.lastDevice
	f.mu.Unlock()
	if !strings.Contains(form, "scope=openid+profile+email") || !strings.Contains(form, "client_id="+testClientID) {
		t.Errorf("device request form = %s", form)
	}
	text := logText(logs)
	if !strings.Contains(text, "signed in") || !strings.Contains(text, "user=alice") || !strings.Contains(text, "client=192.0.2.1:50022") ||
		!strings.Contains(text, "subject=AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ") {
		t.Errorf("log lacks the sign-in:\n%s", text)
	}
	if f.secretsIn(text) {
		t.Errorf("log holds a token or the device code:\n%s", text)
	}
}

func TestDeviceSignInErrors(t *testing.T) {
	for _, tt := range []struct {
		code string
		want error
		msg  string
	}{
		{"authorization_declined", ErrDeclined, "poolgate: sign-in was declined"},
		{"access_denied", ErrDeclined, "poolgate: sign-in was declined"},
		{"bad_verification_code", ErrBadCode, "poolgate: the identity provider does not know this sign-in code; connect again for a new one"},
		{"expired_token", ErrExpired, "poolgate: the sign-in code expired; connect again for a new one"},
		{"invalid_grant", ErrProviderUnavailable, "poolgate: the identity provider refused the sign-in; ask ops (the gateway's log says why)"},
	} {
		t.Run(tt.code, func(t *testing.T) {
			f := newFakeEntra(t)
			f.setPolls("authorization_pending", tt.code)
			p, _, logs := f.provider(f.config())
			_, id, err := signIn(t, p)
			if !errors.Is(err, tt.want) || id != nil {
				t.Fatalf("Wait = %v, %v; want %v", id, err, tt.want)
			}
			if got := UserMessage(err); got != tt.msg {
				t.Errorf("UserMessage = %q, want %q", got, tt.msg)
			}
			// The log has Entra's error and AADSTS text, not its trace lines.
			if text := logText(logs); !strings.Contains(text, tt.code+": AADSTS") || strings.Contains(text, "Correlation ID") {
				t.Errorf("log:\n%s", text)
			}
		})
	}
}

func TestSignedInAsSomeoneElse(t *testing.T) {
	f := newFakeEntra(t)
	p, _, logs := f.provider(f.config())
	ctx := context.Background()
	s, err := p.StartDevice(ctx, "bob", addr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Wait(ctx)
	if !errors.Is(err, ErrWrongUser) || id != nil {
		t.Fatalf("Wait = %v, %v; want ErrWrongUser", id, err)
	}
	if got, want := UserMessage(err), "poolgate: signed in as alice, which is not the login name bob; log in as alice"; got != want {
		t.Errorf("UserMessage = %q, want %q", got, want)
	}
	if text := logText(logs); !strings.Contains(text, "sign-in refused") || !strings.Contains(text, "login=bob") || !strings.Contains(text, "user=alice") {
		t.Errorf("log:\n%s", text)
	}
}

func TestTransientPollFailuresAreRetried(t *testing.T) {
	f := newFakeEntra(t)
	f.setPolls("authorization_pending", "temporarily_unavailable", "server_error", "authorization_pending", "ok")
	p, waits, _ := f.provider(f.config())
	if _, id, err := signIn(t, p); err != nil || id.User != "alice" {
		t.Fatalf("Wait = %v, %v", id, err)
	}
	// Each transient failure doubles the interval.
	if want := []time.Duration{5 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second, 20 * time.Second}; !slices.Equal(*waits, want) {
		t.Errorf("waits = %v, want %v", *waits, want)
	}

	f.setPolls("server_error", "server_error", "server_error", "ok")
	_, _, err := signIn(t, p)
	if !errors.Is(err, ErrProviderUnavailable) || !strings.Contains(err.Error(), "HTTP 400: server_error") {
		t.Fatalf("after %d transient failures: %v", transientTries, err)
	}
}

func TestWaitEndsAtExpiryAndOnCancel(t *testing.T) {
	f := newFakeEntra(t)
	f.setPolls("authorization_pending")
	p, _, _ := f.provider(f.config())
	p.after = time.After
	ctx := context.Background()
	s, err := p.StartDevice(ctx, "alice", addr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	s.Interval, s.Expiry = 20*time.Millisecond, time.Now().Add(150*time.Millisecond)
	start := time.Now()
	if _, err := s.Wait(ctx); !errors.Is(err, ErrExpired) {
		t.Fatalf("Wait past expiry = %v, want ErrExpired", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Wait took %s after expiry", d)
	}

	s, err = p.StartDevice(ctx, "alice", addr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	s.Interval = 20 * time.Millisecond
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := s.Wait(cctx); !errors.Is(err, context.Canceled) || errors.Is(err, ErrExpired) {
		t.Fatalf("Wait after the client left = %v, want context.Canceled", err)
	}
}

func TestTokensRejected(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(f *fakeEntra)
		log   string
	}{
		{"wrong audience", func(f *fakeEntra) { f.setClaim("aud", "99999999-0000-0000-0000-000000000000") }, "expected audience"},
		{"wrong issuer", func(f *fakeEntra) {
			f.setClaim("iss", "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0")
		}, "different provider"},
		{"expired", func(f *fakeEntra) { f.setClaim("exp", time.Now().Add(-time.Minute).Unix()) }, "expired"},
		{"not yet valid", func(f *fakeEntra) { f.setClaim("nbf", time.Now().Add(time.Hour).Unix()) }, "nbf"},
		{"unknown key", func(f *fakeEntra) {
			k, _ := rsaKey()
			f.mu.Lock()
			f.signWith = k
			f.mu.Unlock()
		}, "signature"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEntra(t)
			tt.setup(f)
			p, _, logs := f.provider(f.config())
			_, id, err := signIn(t, p)
			if !errors.Is(err, ErrInvalidToken) || id != nil {
				t.Fatalf("Wait = %v, %v; want ErrInvalidToken", id, err)
			}
			if !strings.Contains(logText(logs), tt.log) {
				t.Errorf("log lacks %q:\n%s", tt.log, logText(logs))
			}
			if f.secretsIn(logText(logs)) || f.secretsIn(err.Error()) {
				t.Errorf("a token leaked into the log or error")
			}
		})
	}
}

func TestKeyRotationRefetchesKeys(t *testing.T) {
	f := newFakeEntra(t)
	p, _, _ := f.provider(f.config())
	if _, _, err := signIn(t, p); err != nil {
		t.Fatal(err)
	}
	_, _, jwks := f.counts()
	if _, _, err := signIn(t, p); err != nil {
		t.Fatal(err)
	}
	if _, _, j := f.counts(); j != jwks {
		t.Errorf("keys fetched again for a known kid (%d → %d)", jwks, j)
	}
	f.rotate()
	if _, id, err := signIn(t, p); err != nil || id.User != "alice" {
		t.Fatalf("after key rotation: %v, %v", id, err)
	}
	if _, _, j := f.counts(); j != jwks+1 {
		t.Errorf("keys fetched %d times after rotation, want %d", j, jwks+1)
	}
}

func TestMessageWithoutProviderWords(t *testing.T) {
	f := newFakeEntra(t)
	f.noMessage = true
	p, _, _ := f.provider(f.config())
	s, _, err := signIn(t, p)
	if err != nil {
		t.Fatal(err)
	}
	want := "To sign in, open https://microsoft.com/devicelogin in a web browser and enter the code FQK4XZ2B\n(or open https://example.test/device?user_code=FQK4XZ2B)"
	if s.Message != want {
		t.Errorf("Message = %q, want %q", s.Message, want)
	}
}

func TestStartLimit(t *testing.T) {
	f := newFakeEntra(t)
	cfg := f.config()
	cfg.DeviceLimit = DeviceLimit{PerAddress: 2, Total: 3, Window: time.Minute}
	p, _, _ := f.provider(cfg)
	now := time.Now()
	p.limit.now = func() time.Time { return now }
	ctx := context.Background()
	for i, tt := range []struct {
		ip string
		ok bool
	}{
		{"2001:db8:1:2::1", true}, {"2001:db8:1:2::ffff", true}, // one /64
		{"2001:db8:1:2:aaaa::1", false}, {"198.51.100.7", true}, {"198.51.100.8", false}, // total
	} {
		_, err := p.StartDevice(ctx, "alice", addr(tt.ip))
		if tt.ok != (err == nil) || (!tt.ok && !errors.Is(err, ErrTooManyStarts)) {
			t.Fatalf("start %d from %s: %v", i, tt.ip, err)
		}
		if err != nil && UserMessage(err) != "poolgate: too many sign-ins started from your address; wait a minute and try again" {
			t.Errorf("UserMessage = %q", UserMessage(err))
		}
	}
	if d, _, _ := f.counts(); d != 3 {
		t.Errorf("provider asked %d times, want 3", d)
	}
	now = now.Add(time.Minute)
	if _, err := p.StartDevice(ctx, "alice", addr("2001:db8:1:2::1")); err != nil {
		t.Errorf("after the window: %v", err)
	}
}

func TestProviderDownThenUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	cfg := Config{OIDC: OIDCConfig{Issuer: "http://" + a + "/TENANT/v2.0", ClientID: testClientID}}
	now := time.Now()
	p, err := New(cfg, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("New must not contact the provider: %v", err)
	}
	start := time.Now()
	_, err = p.StartDevice(context.Background(), "alice", addr("192.0.2.1"))
	if !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("StartDevice = %v, want ErrProviderUnavailable", err)
	}
	if got := UserMessage(err); got != "poolgate: the identity provider cannot be reached; try again later, or log in with a key the gateway knows" {
		t.Errorf("UserMessage = %q", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}

	// The provider comes up: the failure is remembered briefly, then
	// discovery is tried again.
	f := newFakeEntra(t)
	c := p.Config() // the same provider, come up (SetConfig would forget the failure)
	c.OIDC.Issuer = f.issuer
	p.cfg.Store(&c)
	if _, err := p.StartDevice(context.Background(), "alice", addr("192.0.2.2")); !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("within %s of the failure: %v", rediscoverAfter, err)
	}
	now = now.Add(rediscoverAfter)
	if _, err := p.StartDevice(context.Background(), "alice", addr("192.0.2.3")); err != nil {
		t.Fatalf("after the provider came up: %v", err)
	}
}

func TestProviderSlowIsBounded(t *testing.T) {
	f := newFakeEntra(t)
	cfg := f.config()
	cfg.OIDC.RequestTimeout = 200 * time.Millisecond
	p, _, _ := f.provider(cfg)

	// Slow while polling: each poll times out, a few are retried, then
	// one clear error.
	s, err := p.StartDevice(context.Background(), "alice", addr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	f.blockAll()
	start := time.Now()
	_, err = s.Wait(context.Background())
	if !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("Wait = %v, want ErrProviderUnavailable", err)
	}
	if d := time.Since(start); d > time.Duration(transientTries)*cfg.OIDC.RequestTimeout+2*time.Second {
		t.Errorf("Wait took %s", d)
	}

	// Slow at discovery: a fresh provider fails within the timeout.
	p2, _, _ := f.provider(cfg)
	start = time.Now()
	if _, err := p2.StartDevice(context.Background(), "alice", addr("192.0.2.1")); !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("StartDevice = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("StartDevice took %s", d)
	}
}

func TestDeviceEndpointFromDiscoveryOrEntra(t *testing.T) {
	f := newFakeEntra(t)
	f.noDevice = true
	p, _, _ := f.provider(f.config())
	_, err := p.StartDevice(context.Background(), "alice", addr("192.0.2.1"))
	if !errors.Is(err, ErrProviderUnavailable) || !strings.Contains(err.Error(), "device_authorization_endpoint") {
		t.Fatalf("StartDevice without a device endpoint = %v", err)
	}
	for _, tt := range []struct{ issuer, want string }{
		{"https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/v2.0", "https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/oauth2/v2.0/devicecode"},
		{"https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/v2.0/", "https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/oauth2/v2.0/devicecode"},
		{"https://login.microsoftonline.com/tenant", ""},
		{"https://login.example.com/tenant/v2.0", ""},
		{"https://login.microsoftonline.com.evil.example/t/v2.0", ""},
	} {
		got, _ := entraDeviceEndpoint(tt.issuer)
		if got != tt.want {
			t.Errorf("entraDeviceEndpoint(%q) = %q, want %q", tt.issuer, got, tt.want)
		}
	}
}

func TestUnknownClientIsAProviderError(t *testing.T) {
	f := newFakeEntra(t)
	cfg := f.config()
	cfg.OIDC.ClientID = "00000000-0000-0000-0000-000000000000"
	p, _, logs := f.provider(cfg)
	_, err := p.StartDevice(context.Background(), "alice", addr("192.0.2.1"))
	if !errors.Is(err, ErrProviderUnavailable) || !strings.Contains(logText(logs), "unauthorized_client: AADSTS700016") {
		t.Fatalf("StartDevice = %v; log:\n%s", err, logText(logs))
	}
}

func TestIssuerMismatchIsNamed(t *testing.T) {
	f := newFakeEntra(t)
	cfg := f.config()
	cfg.OIDC.Issuer = f.issuer + "/" // the provider calls itself without the slash
	p, _, logs := f.provider(cfg)
	_, err := p.StartDevice(context.Background(), "alice", addr("192.0.2.1"))
	if !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("StartDevice = %v", err)
	}
	if got, want := UserMessage(err), `poolgate: the identity provider is misconfigured on this gateway; ask ops (identity.oidc.issuer must be "`+f.issuer+`" exactly)`; got != want {
		t.Errorf("UserMessage = %q, want %q", got, want)
	}
	if !strings.Contains(logText(logs), "identity provider discovery failed") {
		t.Errorf("log:\n%s", logText(logs))
	}
}

func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		te     *tokenError
		want   bool
	}{
		{errors.New("connection refused"), 0, nil, true},
		{nil, 429, &tokenError{Code: "slow_down"}, true},
		{nil, 503, nil, true},
		{nil, 400, nil, true}, // not an OAuth error
		{nil, 400, &tokenError{Code: "temporarily_unavailable"}, true},
		{nil, 400, &tokenError{Code: "authorization_pending"}, false},
		{nil, 400, &tokenError{Code: "invalid_client"}, false},
	} {
		if got := transient(tt.err, tt.status, tt.te); got != tt.want {
			t.Errorf("transient(%v, %d, %+v) = %v", tt.err, tt.status, tt.te, got)
		}
	}
}

func TestParseDeviceAuth(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		err        string
		check      func(a *deviceAuth) bool
	}{
		{"Entra", `{"user_code":"FQK4XZ2B","device_code":"d","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"` + testMessage + `"}`, "",
			func(a *deviceAuth) bool {
				return a.message() == testMessage && a.ExpiresIn == 15*time.Minute && a.Interval == 5*time.Second
			}},
		{"verification_url (Google, Entra v1)", `{"user_code":"A-B","device_code":"d","verification_url":"https://www.google.com/device","expires_in":"1800"}`, "",
			func(a *deviceAuth) bool {
				return a.VerificationURI == "https://www.google.com/device" && a.ExpiresIn == maxExpiry && a.Interval == defaultInterval
			}},
		{"escapes removed", `{"user_code":"A\u001b[2J","device_code":"d","verification_uri":"https://e.test/","message":"\u001b]0;pwned\u0007Open https://e.test/ code A\u202e\r\nnow"}`, "",
			func(a *deviceAuth) bool { return a.UserCode == "A[2J" && a.message() != "" && shownSafely(a.message()) }},
		{"message without the code is not used", `{"user_code":"XYZ","device_code":"d","verification_uri":"https://e.test/","message":"Just go to https://evil.test/"}`, "",
			func(a *deviceAuth) bool {
				return strings.Contains(a.message(), "XYZ") && !strings.Contains(a.message(), "evil")
			}},
		{"interval bounded", `{"user_code":"A","device_code":"d","verification_uri":"https://e.test/","interval":86400,"expires_in":0}`, "",
			func(a *deviceAuth) bool { return a.Interval == maxInterval && a.ExpiresIn == defaultExpiry }},
		{"no device code", `{"user_code":"A","verification_uri":"https://e.test/"}`, "no device_code", nil},
		{"no user code", `{"device_code":"d","verification_uri":"https://e.test/"}`, "no usable user_code", nil},
		{"javascript URI", `{"user_code":"A","device_code":"d","verification_uri":"javascript:alert(1)"}`, "no usable verification_uri", nil},
		{"bad complete URI", `{"user_code":"A","device_code":"d","verification_uri":"https://e.test/","verification_uri_complete":"https://e.test/\u001b"}`, "no usable verification_uri_complete", nil},
		{"not JSON", `<html>`, "not JSON", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := parseDeviceAuth([]byte(tt.body))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseDeviceAuth = %+v, %v; want %q", a, err, tt.err)
				}
				return
			}
			if err != nil || !tt.check(a) {
				t.Fatalf("parseDeviceAuth = %+v (message %q), %v", a, a.message(), err)
			}
		})
	}
}
