package admin

import (
	_ "embed"
	"html/template"
	"net/http"
	"strings"
	"time"
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
	_ = loginPage.Execute(w, struct{ Failed bool }{failed})
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
