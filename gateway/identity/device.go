package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/internal/netx"
)

// Bounds on what a device authorization response may ask for.
const (
	defaultInterval = 5 * time.Second // RFC 8628 §3.2
	maxInterval     = 60 * time.Second
	defaultExpiry   = 5 * time.Minute
	maxExpiry       = 30 * time.Minute
	slowDownStep    = 5 * time.Second // RFC 8628 §3.5
	maxMessage      = 1024            // bytes of the provider's message shown
	maxBody         = 1 << 20         // bytes read of any response
	// transientTries is how many polls in a row may fail for the network
	// or a 5xx before the sign-in fails.
	transientTries = 3
)

// DeviceSignIn is a device-code sign-in started with the provider
// (RFC 8628): show Message to the user, then Wait.
type DeviceSignIn struct {
	// Message is what to show the user: the provider's own words when it
	// sends them (Entra ID's message), else built from VerificationURI and
	// UserCode. Control characters are removed; it may hold newlines.
	Message                 string
	UserCode                string
	VerificationURI         string
	VerificationURIComplete string
	// Expiry is when the code expires; Wait gives up then.
	Expiry time.Time
	// Interval is the time between polls asked for.
	Interval time.Duration

	p          *Provider
	d          *discovered
	client     string
	login      string
	deviceCode string
}

// deviceAuth is a parsed device authorization response (RFC 8628 §3.2,
// with Entra ID's message).
type deviceAuth struct {
	DeviceCode              string
	UserCode                string
	VerificationURI         string
	VerificationURIComplete string
	ExpiresIn               time.Duration
	Interval                time.Duration
	Message                 string
}

// parseDeviceAuth parses a device authorization response, untrusted
// input: required fields present, numbers bounded, and every string
// shown to the user free of control characters.
func parseDeviceAuth(body []byte) (*deviceAuth, error) {
	var r struct {
		DeviceCode              string          `json:"device_code"`
		UserCode                string          `json:"user_code"`
		VerificationURI         string          `json:"verification_uri"`
		VerificationURL         string          `json:"verification_url"` // Entra v1, Google
		VerificationURIComplete string          `json:"verification_uri_complete"`
		ExpiresIn               json.RawMessage `json:"expires_in"`
		Interval                json.RawMessage `json:"interval"`
		Message                 string          `json:"message"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("device authorization response is not JSON: %w", err)
	}
	if r.VerificationURI == "" {
		r.VerificationURI = r.VerificationURL
	}
	a := &deviceAuth{DeviceCode: r.DeviceCode, Message: printable(r.Message, maxMessage)}
	if a.DeviceCode == "" {
		return nil, errors.New("device authorization response has no device_code")
	}
	a.UserCode = printable(r.UserCode, 64)
	if a.UserCode == "" || strings.ContainsAny(a.UserCode, " \n") {
		return nil, errors.New("device authorization response has no usable user_code")
	}
	for _, u := range []struct {
		name     string
		in       string
		out      *string
		required bool
	}{
		{"verification_uri", r.VerificationURI, &a.VerificationURI, true},
		{"verification_uri_complete", r.VerificationURIComplete, &a.VerificationURIComplete, false},
	} {
		if u.in == "" && !u.required {
			continue
		}
		pu, err := url.Parse(u.in)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || printable(u.in, 2048) != u.in || strings.ContainsAny(u.in, " \n") {
			return nil, fmt.Errorf("device authorization response has no usable %s", u.name)
		}
		*u.out = u.in
	}
	a.ExpiresIn = seconds(r.ExpiresIn, defaultExpiry, time.Second, maxExpiry)
	a.Interval = seconds(r.Interval, defaultInterval, time.Second, maxInterval)
	return a, nil
}

// seconds reads a JSON number of seconds (or a string holding one, as
// some providers send), def when absent or not a number, clamped to
// [lo, hi].
func seconds(raw json.RawMessage, def, lo, hi time.Duration) time.Duration {
	s := strings.Trim(string(raw), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return def
	}
	if n > int64(hi/time.Second) {
		return hi
	}
	return max(time.Duration(n)*time.Second, lo)
}

// printable returns s without control characters (a provider's text goes
// to the user's terminal, where escapes would act), with CR LF and CR as
// LF, cut to at most n bytes on a rune boundary.
func printable(s string, n int) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for _, r := range s {
		if r == '\r' {
			r = '\n'
		}
		if r == utf8.RuneError || (r != '\n' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r))) {
			continue
		}
		if b.Len()+len(string(r)) > n {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// message is the text to show for a. The provider's message is used
// verbatim (cleaned) only when it names the user code: one that does not
// would leave the user without it.
func (a *deviceAuth) message() string {
	if a.Message != "" && strings.Contains(a.Message, a.UserCode) {
		return a.Message
	}
	m := fmt.Sprintf("To sign in, open %s in a web browser and enter the code %s", a.VerificationURI, a.UserCode)
	if a.VerificationURIComplete != "" {
		m += "\n(or open " + a.VerificationURIComplete + ")"
	}
	return m
}

// tokenError is an OAuth 2.0 error response (RFC 6749 §5.2), with
// Entra ID's numeric AADSTS codes.
type tokenError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
}

func (e *tokenError) Error() string {
	d := e.Description
	if i := strings.IndexAny(d, "\r\n"); i >= 0 {
		d = d[:i] // Entra appends trace and correlation IDs on lines of their own
	}
	if d == "" {
		return e.Code
	}
	return e.Code + ": " + printable(d, 300)
}

// parseTokenError parses an error response of the token or device
// endpoint; nil when body is none.
func parseTokenError(body []byte) *tokenError {
	var e tokenError
	if json.Unmarshal(body, &e) != nil || e.Code == "" {
		return nil
	}
	if e.Code = printable(e.Code, 64); e.Code == "" || strings.Contains(e.Code, "\n") {
		return nil
	}
	return &e
}

// parseTokenResponse returns the id_token of a successful token response.
func parseTokenResponse(body []byte) (string, error) {
	var r struct {
		IDToken     string `json:"id_token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("token response is not JSON: %w", err)
	}
	return r.IDToken, nil
}

// post sends a form to url with the per-request timeout, returning the
// status and at most maxBody bytes of the body.
func (p *Provider) post(ctx context.Context, u string, form url.Values) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.conf().OIDC.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, body, nil
}

// StartDevice starts a device-code sign-in for login (the canonical
// name the client asked to log in as; "" when there is none to check)
// connecting from client: it asks the provider for a code, within the
// per-address and total start limits. The caller shows Message and
// calls Wait, which refuses a user who signs in as someone else.
func (p *Provider) StartDevice(ctx context.Context, login string, client net.Addr) (*DeviceSignIn, error) {
	caddr := ""
	if client != nil {
		caddr = client.String()
	}
	s, err := p.startDevice(ctx, client)
	if err != nil {
		p.logRefusal("device", caddr, login, nil, err)
		return nil, err
	}
	s.client, s.login = caddr, login
	p.log.Info("device sign-in started", zap.String("login", login), zap.String("client", caddr),
		zap.Duration("expires_in", s.Expiry.Sub(p.now()).Round(time.Second)))
	return s, nil
}

func (p *Provider) startDevice(ctx context.Context, client net.Addr) (*DeviceSignIn, error) {
	key := ""
	if client != nil {
		key = netx.AddrKey(client)
	}
	if !p.limit.take(key) {
		return nil, refuse(ErrTooManyStarts, nil, "too many sign-ins started from your address; wait a minute and try again")
	}
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	if d.deviceErr != nil {
		return nil, refuse(ErrProviderUnavailable, d.deviceErr, "the identity provider offers no sign-in from a terminal; log in with a key the gateway knows")
	}
	form := url.Values{"client_id": {p.conf().OIDC.ClientID}, "scope": {strings.Join(p.conf().OIDC.Scopes, " ")}}
	status, body, err := p.post(ctx, d.endpoint.DeviceAuthURL, form)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, refuse(ErrProviderUnavailable, fmt.Errorf("device authorization: %w", err), "the identity provider cannot be reached; try again later, or log in with a key the gateway knows")
	}
	if status != http.StatusOK {
		detail := fmt.Errorf("device authorization: HTTP %d", status)
		if te := parseTokenError(body); te != nil {
			detail = fmt.Errorf("device authorization: HTTP %d: %w", status, te)
		}
		return nil, refuse(ErrProviderUnavailable, detail, "the identity provider refused to start a sign-in; ask ops (the gateway's log says why)")
	}
	a, err := parseDeviceAuth(body)
	if err != nil {
		return nil, refuse(ErrProviderUnavailable, err, "the identity provider sent an answer the gateway cannot use; ask ops")
	}
	return &DeviceSignIn{
		Message: a.message(), UserCode: a.UserCode,
		VerificationURI: a.VerificationURI, VerificationURIComplete: a.VerificationURIComplete,
		Expiry: p.now().Add(a.ExpiresIn), Interval: a.Interval,
		p: p, d: d, deviceCode: a.DeviceCode,
	}, nil
}

// Wait polls the provider until the user signs in, declines, or the code
// expires, and returns the verified identity, which is the login name
// given to StartDevice (else ErrWrongUser). It ends by Expiry or when
// ctx ends (the user disconnected), whichever comes first; each poll is
// bounded by identity.oidc.request_timeout. A sign-in refused for the
// user's groups or name returns that refusal (and the identity when
// known, for the log).
func (s *DeviceSignIn) Wait(ctx context.Context) (*Identity, error) {
	id, err := s.wait(ctx)
	if err != nil {
		s.p.logRefusal("device", s.client, s.login, id, err)
		return nil, err
	}
	s.p.logSignIn("device", s.client, id)
	return id, nil
}

func (s *DeviceSignIn) wait(ctx context.Context) (*Identity, error) {
	p := s.p
	ctx, cancel := context.WithTimeoutCause(ctx, s.Expiry.Sub(p.now()), errCodeExpired)
	defer cancel()
	form := url.Values{
		"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		"client_id":   {p.conf().OIDC.ClientID},
		"device_code": {s.deviceCode},
	}
	interval, failures := s.Interval, 0
	for {
		select {
		case <-ctx.Done():
			return nil, s.ended(ctx)
		case <-p.after(interval):
		}
		status, body, err := p.post(ctx, s.d.endpoint.TokenURL, form)
		if err == nil && status == http.StatusOK {
			raw, err := parseTokenResponse(body)
			if err != nil {
				return nil, refuse(ErrProviderUnavailable, err, "the identity provider sent an answer the gateway cannot use; ask ops")
			}
			id, err := p.verify(ctx, s.d, raw, "")
			if err == nil && s.login != "" {
				err = id.CheckLogin(s.login)
			}
			return id, err
		}
		if err != nil && ctx.Err() != nil {
			return nil, s.ended(ctx)
		}
		var te *tokenError
		if err == nil {
			te = parseTokenError(body)
		}
		if transient(err, status, te) {
			// The network, a 5xx or 429, or a body that is no OAuth
			// error: try again, slower, a few times.
			failures++
			switch {
			case err != nil:
			case te != nil:
				err = fmt.Errorf("token endpoint: HTTP %d: %w", status, te)
			default:
				err = fmt.Errorf("token endpoint: HTTP %d", status)
			}
			if failures >= transientTries {
				return nil, refuse(ErrProviderUnavailable, err, "the identity provider stopped answering; try again later, or log in with a key the gateway knows")
			}
			interval = min(2*interval, maxInterval)
			continue
		}
		failures = 0
		switch te.Code {
		case "authorization_pending":
		case "slow_down":
			interval += slowDownStep
		case "authorization_declined", "access_denied":
			return nil, refuse(ErrDeclined, te, "sign-in was declined")
		case "bad_verification_code":
			return nil, refuse(ErrBadCode, te, "the identity provider does not know this sign-in code; connect again for a new one")
		case "expired_token":
			return nil, refuse(ErrExpired, te, "the sign-in code expired; connect again for a new one")
		default:
			return nil, refuse(ErrProviderUnavailable, te, "the identity provider refused the sign-in; ask ops (the gateway's log says why)")
		}
	}
}

// transient reports whether a poll's failure may pass if tried again.
func transient(err error, status int, te *tokenError) bool {
	switch {
	case err != nil, status == http.StatusTooManyRequests, status >= 500, te == nil:
		return true
	}
	return te.Code == "temporarily_unavailable" || te.Code == "server_error"
}

// errCodeExpired is the cause of a wait's end at the code's expiry.
var errCodeExpired = errors.New("device code expired")

// ended is the error for a wait whose context ended: expiry, or the
// caller's own reason.
func (s *DeviceSignIn) ended(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), errCodeExpired) {
		return refuse(ErrExpired, nil, "the sign-in code expired before sign-in finished; connect again for a new one")
	}
	return ctx.Err()
}
