package admin

import (
	_ "embed"
	"html/template"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/gateway/identity"
)

// The dashboard is one self-contained page (no CDN): it polls /api/nodes.
//
//go:embed dashboard.html
var dashboardHTML []byte

//go:embed login.html
var loginHTML string

var loginPage = template.Must(template.New("login").Parse(loginHTML))

// cookieName carries the dashboard's sign-in for browsers, which cannot
// send a bearer header when they load a page: an opaque session
// (session.go), never the token. It is HttpOnly and SameSite=Strict, so
// no other site's page can use it to drain a node; browsers send it to
// every port of the host, so the HTTP gateway strips it before a hub.
const cookieName = "poolgate_admin"

// pageHeaders are sent with the HTML pages.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "+
		"connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}

// dashboard serves the page, or the sign-in form with 401.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	if s.accessOf(r) == noAccess {
		s.loginForm(w, false)
		return
	}
	pageHeaders(w)
	_, _ = w.Write(dashboardHTML)
}

func (s *Server) loginForm(w http.ResponseWriter, failed bool) {
	pageHeaders(w)
	w.Header().Set("WWW-Authenticate", `Bearer realm="poolgate"`)
	w.WriteHeader(http.StatusUnauthorized)
	_ = loginPage.Execute(w, struct{ Failed, SignIn bool }{failed, s.web != nil})
}

// signInRedirect is where the provider sends the browser back: this
// server's own address as the browser named it (the Host header passed
// the guard), so it must be registered with the provider as is.
func signInRedirect(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/_poolgate/callback"
}

// signIn sends the browser to the identity provider (identity.ops_groups
// may use the page).
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	if s.web == nil {
		http.NotFound(w, r)
		return
	}
	s.web.Begin(w, r, signInRedirect(r), "/")
}

// signInDone is the provider's callback: an operator gets the page's
// session (the same cookie a token gives, with write access), anyone else
// a page saying why not.
func (s *Server) signInDone(w http.ResponseWriter, r *http.Request) {
	if s.web == nil {
		http.NotFound(w, r)
		return
	}
	id, _, err := s.web.Finish(w, r, signInRedirect(r))
	if err != nil {
		identity.WritePage(w, http.StatusForbidden, "Sign-in failed", identity.UserMessage(err), "/_poolgate/signin")
		return
	}
	if !s.web.Provider.Config().IsOps(id) {
		s.log.Info("admin sign-in refused: not in identity.ops_groups", zap.String("user", id.User), zap.String("subject", id.Subject), zap.String("client", r.RemoteAddr))
		identity.WritePage(w, http.StatusForbidden, "Not an operator",
			"poolgate: "+id.User+" is signed in, but is not in a group of identity.ops_groups, so this page stays closed.", "")
		return
	}
	s.log.Info("admin signed in", zap.String("user", id.User), zap.String("subject", id.Subject), zap.String("client", r.RemoteAddr))
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: s.sess.issue(writeAccess), Path: "/", MaxAge: int(sessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	identity.Continue(w, "/")
}

// login takes a token from the sign-in form and, if valid, keeps it in
// the browser's cookie.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "the sign-in form is malformed or too large")
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if s.levelOf([]byte(tok)) == noAccess {
		s.log.Info("admin sign-in refused")
		s.loginForm(w, true)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: s.sess.issue(s.levelOf([]byte(tok))), Path: "/", MaxAge: int(sessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, "./", http.StatusSeeOther)
}

// access answers what the caller may do, for the page's buttons.
func (s *Server) access(w http.ResponseWriter, r *http.Request) {
	a := s.accessOf(r)
	writeJSON(w, http.StatusOK, map[string]bool{"read": a >= readAccess, "write": a == writeAccess})
}
