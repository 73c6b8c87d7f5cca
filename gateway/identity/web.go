package identity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Web is the browser sign-in for a front end's own pages (the ops
// dashboard, the users' page): Begin sends the browser to the provider
// with a sign-in attempt kept in a short-lived signed cookie (state,
// nonce, PKCE verifier, the page to return to); Finish checks the
// callback against it and redeems the code; a signed session cookie then
// carries who signed in. Cookies are signed with Key (HMAC-SHA256): a key
// shared by the gateways lets a callback land on any of them.
type Web struct {
	Provider *Provider
	// Name prefixes the cookies ("poolgate_ops" gives poolgate_ops and
	// poolgate_ops_attempt), so two front ends on one host keep theirs.
	Name string
	// Key signs the cookies; at least 32 bytes.
	Key []byte
	// TTL is how long a session lasts; 0 means 12h.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// WebSession is who a browser session belongs to.
type WebSession struct {
	User    string    `json:"u"`
	Subject string    `json:"s"`
	Name    string    `json:"n,omitempty"`
	Ops     bool      `json:"o,omitempty"`
	Until   time.Time `json:"t"`
}

// attempt is one browser sign-in under way.
type attempt struct {
	State    string    `json:"st"`
	Nonce    string    `json:"no"`
	Verifier string    `json:"v"`
	Return   string    `json:"r"`
	Until    time.Time `json:"t"`
}

// attemptTTL bounds a sign-in at the provider's pages.
const attemptTTL = 10 * time.Minute

// NewWebKey returns a random cookie key.
func NewWebKey() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("identity: no randomness for the cookie key: " + err.Error())
	}
	return k
}

func (w *Web) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Web) ttl() time.Duration {
	if w.TTL > 0 {
		return w.TTL
	}
	return 12 * time.Hour
}

// seal signs v as a cookie value: base64url(JSON).base64url(HMAC).
func (w *Web) seal(purpose string, v any) string {
	b, _ := json.Marshal(v)
	payload := base64.RawURLEncoding.EncodeToString(b)
	return payload + "." + w.mac(purpose, payload)
}

func (w *Web) mac(purpose, payload string) string {
	m := hmac.New(sha256.New, w.Key)
	m.Write([]byte("poolgate " + w.Name + " " + purpose + "\x00" + payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// open checks a cookie value made by seal and decodes it into v.
func (w *Web) open(purpose, value string, v any) bool {
	if len(value) > 4096 {
		return false
	}
	payload, mac, ok := strings.Cut(value, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(w.mac(purpose, payload))) {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	return err == nil && json.Unmarshal(b, v) == nil
}

// localPath keeps a return address on this site: a path, never a
// scheme, host or "//".
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	return p
}

// Begin sends the browser to the provider's sign-in page; after it, the
// provider sends the browser to redirectURL, whose handler calls Finish,
// and the browser returns to returnTo (a path on this site).
func (w *Web) Begin(rw http.ResponseWriter, r *http.Request, redirectURL, returnTo string) {
	a := attempt{
		State: oauth2.GenerateVerifier(), Nonce: oauth2.GenerateVerifier(), Verifier: oauth2.GenerateVerifier(),
		Return: localPath(returnTo), Until: w.now().Add(attemptTTL),
	}
	to, err := w.Provider.AuthCodeURL(r.Context(), a.State, a.Nonce, a.Verifier, redirectURL)
	if err != nil {
		WritePage(rw, http.StatusBadGateway, "Sign-in unavailable", UserMessage(err), "")
		return
	}
	http.SetCookie(rw, &http.Cookie{
		Name: w.Name + "_attempt", Value: w.seal("attempt", a), Path: "/", MaxAge: int(attemptTTL / time.Second),
		// Lax: the provider's redirect back is a top-level navigation
		// from another site, which a Strict cookie would not follow.
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	http.Redirect(rw, r, to, http.StatusFound)
}

// ErrNoAttempt: a callback without a matching sign-in attempt (none
// begun in this browser, expired, or a forged state).
var ErrNoAttempt = errors.New("no sign-in attempt matches this callback")

// Finish completes a sign-in at the callback: the state must match the
// attempt this browser began, and the code is redeemed with its verifier
// and nonce. It returns the identity and the page to return to.
func (w *Web) Finish(rw http.ResponseWriter, r *http.Request, redirectURL string) (*Identity, string, error) {
	var a attempt
	c, err := r.Cookie(w.Name + "_attempt")
	if err != nil || !w.open("attempt", c.Value, &a) || !w.now().Before(a.Until) {
		return nil, "/", refuse(ErrInvalidToken, ErrNoAttempt, "the sign-in expired or was not started in this browser; start again")
	}
	http.SetCookie(rw, &http.Cookie{Name: w.Name + "_attempt", Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil})
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		if e == "access_denied" {
			return nil, a.Return, refuse(ErrDeclined, errors.New(printable(e, 100)), "sign-in was declined")
		}
		return nil, a.Return, refuse(ErrProviderUnavailable, errors.New(printable(e+": "+q.Get("error_description"), 300)), "the identity provider refused the sign-in; ask ops (the gateway's log says why)")
	}
	if st := q.Get("state"); st == "" || !hmac.Equal([]byte(st), []byte(a.State)) {
		return nil, a.Return, refuse(ErrInvalidToken, ErrNoAttempt, "the sign-in could not be verified; start again")
	}
	var client net.Addr
	if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		client = ap
	}
	id, err := w.Provider.Exchange(r.Context(), q.Get("code"), a.Nonce, a.Verifier, redirectURL, client)
	if err != nil {
		return nil, a.Return, err
	}
	return id, a.Return, nil
}

// SetSession gives the browser a session for s, valid for TTL (or until
// s.Until if sooner and set).
func (w *Web) SetSession(rw http.ResponseWriter, r *http.Request, s WebSession) {
	until := w.now().Add(w.ttl())
	if s.Until.IsZero() || s.Until.After(until) {
		s.Until = until
	}
	http.SetCookie(rw, &http.Cookie{
		Name: w.Name, Value: w.seal("session", s), Path: "/", MaxAge: int(time.Until(s.Until) / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
}

// Session returns the browser's session, if it has a valid one.
func (w *Web) Session(r *http.Request) (WebSession, bool) {
	var s WebSession
	c, err := r.Cookie(w.Name)
	if err != nil || !w.open("session", c.Value, &s) || !w.now().Before(s.Until) || s.User == "" {
		return WebSession{}, false
	}
	return s, true
}

// ClearSession signs the browser out.
func (w *Web) ClearSession(rw http.ResponseWriter, r *http.Request) {
	http.SetCookie(rw, &http.Cookie{Name: w.Name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil})
}

// Continue answers a finished callback with a page that goes on to to (a
// path on this site) by itself: a redirect would keep the navigation
// cross-site, and browsers would then hold back a SameSite cookie just
// set.
func Continue(rw http.ResponseWriter, to string) {
	to = localPath(to)
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("Content-Security-Policy", "default-src 'none'")
	_ = continuePage.Execute(rw, to)
}

var continuePage = template.Must(template.New("c").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={{.}}"><title>Signed in</title></head>
<body><p>Signed in. <a href="{{.}}">Continue</a>.</p></body></html>
`))

// WritePage answers with a small HTML page: a title, a line (as
// UserMessage gives it) and, if link is set, a link to try again.
func WritePage(rw http.ResponseWriter, status int, title, line, link string) {
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	rw.WriteHeader(status)
	_ = messagePage.Execute(rw, struct{ Title, Line, Link string }{title, line, link})
}

var messagePage = template.Must(template.New("m").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}</style></head>
<body><h1>{{.Title}}</h1><p id="line">{{.Line}}</p>{{if .Link}}<p><a href="{{.Link}}">Sign in again</a></p>{{end}}</body></html>
`))
