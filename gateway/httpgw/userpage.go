package httpgw

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/identity"
)

// The users' page: under PagePrefix, which JupyterHub never uses, a
// signed-in user (identity.Web) sees who they are, their node and its
// load, the command to ssh, their open sessions and bound keys, and may
// forget a key or move to another node. Nothing under PagePrefix ever
// reaches a hub, whether the page is on or not.

// PagePrefix is where the users' page lives.
const PagePrefix = "/_poolgate/"

// UserPage turns the users' page on (Options.Users).
type UserPage struct {
	// SignIn signs users in with the identity provider and keeps their
	// browser session. nil turns the page off: paths under PagePrefix
	// answer 404. Its Name must differ from the admin dashboard's.
	SignIn *identity.Web
	// Bindings are the keys bound by sign-ins, listed and forgotten on
	// the page. nil shows no keys.
	Bindings Bindings
	// SSHAddr is the SSH front end's listen address (host:port), whose
	// port goes into the ssh command shown; "" shows no command.
	SSHAddr string
	// NoNodeChoice is set when users may not choose their node
	// (ssh.node_choice false): the page offers no move.
	NoNodeChoice bool
	// RDPFile, when set, offers "Connect with Remote Desktop": an .rdp
	// file for the user through the RD Gateway at gateway (host[:port]),
	// with a token signed for them (gateway/rdg). It returns the file
	// and the token's ID, for the log.
	RDPFile func(user, gateway string) (file []byte, tokenID string, err error)
	// RDGatewayAddress is the gateway as .rdp files name it; "" uses
	// the host the browser asked for.
	RDGatewayAddress string
}

// Bindings is what the page needs of the key bindings
// (identity.Bindings).
type Bindings interface {
	List(ctx context.Context) ([]identity.Binding, error)
	Forget(ctx context.Context, user, fingerprint string) error
}

// pageProto is the protocol the page asks the balancer about: where the
// pool's nodes have hubs, a node the user moves to must serve their
// browser (its hub up) as well as SSH; a pool of SSH-only nodes (this
// page without hubs) is asked for SSH, the node's own check.
func (p *userPage) pageProto() balancer.Protocol {
	for _, ns := range p.bal.Nodes() {
		if ns.HTTP != "" {
			return balancer.HTTP
		}
	}
	return balancer.SSH
}

// maxPageForm bounds a POST body of the page.
const maxPageForm = 4 << 10

// userPage serves the paths under PagePrefix.
type userPage struct {
	UserPage
	bal     Balancer
	log     *zap.Logger
	csrfKey []byte
	sshPort string // "" for 22
	showSSH bool
}

func newUserPage(up *UserPage, bal Balancer, log *zap.Logger) (*userPage, error) {
	if up == nil || up.SignIn == nil {
		return nil, nil
	}
	if up.SignIn.Provider == nil || len(up.SignIn.Key) < 32 || up.SignIn.Name == "" {
		return nil, errors.New("users' page: SignIn needs a Provider, a Name and a Key of at least 32 bytes")
	}
	if up.SignIn.Name == AdminCookie {
		return nil, fmt.Errorf("users' page: SignIn.Name %q is the admin dashboard's cookie", AdminCookie)
	}
	p := &userPage{UserPage: *up, bal: bal, log: log.Named("userpage")}
	m := hmac.New(sha256.New, up.SignIn.Key)
	m.Write([]byte("poolgate users' page CSRF key"))
	p.csrfKey = m.Sum(nil)
	if up.SSHAddr != "" {
		_, port, err := net.SplitHostPort(up.SSHAddr)
		if err != nil {
			return nil, fmt.Errorf("users' page: SSHAddr %q: %w", up.SSHAddr, err)
		}
		p.showSSH = true
		if port != "22" {
			p.sshPort = port
		}
	}
	return p, nil
}

// cookieNames are the page's cookies, kept from the hubs.
func (p *userPage) cookieNames() []string {
	return []string{p.SignIn.Name, p.SignIn.Name + "_attempt"}
}

// isPagePath reports whether a request's (unescaped) path is under
// PagePrefix as sent or once cleaned, so that no spelling of it
// (/_poolgate, %5Fpoolgate, /hub/../_poolgate/, /_poolgate/../x) reaches
// a hub.
func isPagePath(p string) bool {
	under := func(p string) bool { return p == "/_poolgate" || strings.HasPrefix(p, PagePrefix) }
	return under(p) || under(path.Clean("/"+p))
}

// servePage answers a request under PagePrefix; p may be nil (page off).
func (s *Server) servePage(w http.ResponseWriter, r *http.Request, st *reqState) {
	p := s.page
	notFound := func() {
		st.status = http.StatusNotFound
		writePage(w, page{Status: st.status, Title: "Not found", Message: "There is no page at this address."})
	}
	if p == nil {
		notFound()
		return
	}
	sess, signedIn := p.SignIn.Session(r)
	if signedIn {
		st.user = sess.User
	}
	route := r.URL.Path
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	post := r.Method == http.MethodPost
	switch {
	case route == "/_poolgate":
		st.status = http.StatusMovedPermanently
		http.Redirect(w, r, PagePrefix, st.status)
	case route == PagePrefix && get:
		if !signedIn {
			st.status = http.StatusSeeOther
			http.Redirect(w, r, PagePrefix+"signin", st.status)
			return
		}
		st.status = http.StatusOK
		done := r.URL.Query().Get("done")
		p.render(w, r, sess, notice{Text: doneNotices[done], moved: done == "moved"}, st.status)
	case route == PagePrefix+"signin" && get:
		sw := &statusWriter{ResponseWriter: w}
		p.SignIn.Begin(sw, r, origin(r)+PagePrefix+"callback", PagePrefix)
		st.status = sw.status
	case route == PagePrefix+"callback" && get:
		st.status = p.callback(w, r)
	case route == PagePrefix+"signout" && post:
		st.status = p.signOut(w, r, sess, signedIn)
	case route == PagePrefix+"keys/forget" && post:
		st.status = p.forget(w, r, sess, signedIn)
	case route == PagePrefix+"move" && post:
		st.status = p.move(w, r, sess, signedIn)
	case route == PagePrefix+"rdp" && get && p.RDPFile != nil:
		if !signedIn {
			st.status = http.StatusSeeOther
			http.Redirect(w, r, PagePrefix+"signin", st.status)
			return
		}
		st.status = p.rdpFile(w, r, sess)
	case slices.Contains([]string{PagePrefix, PagePrefix + "signin", PagePrefix + "callback", PagePrefix + "signout", PagePrefix + "keys/forget", PagePrefix + "move"}, route):
		st.status = http.StatusMethodNotAllowed
		writePage(w, page{Status: st.status, Title: "Method not allowed", Message: "This address does not take that method."})
	default:
		notFound()
	}
}

// rdpFile answers the signed-in user's .rdp file: through the RD Gateway
// as configured, else at the host the browser asked for (the HTTP front
// end's own address, where the gateway runs).
func (p *userPage) rdpFile(w http.ResponseWriter, r *http.Request, sess identity.WebSession) int {
	gw := p.RDGatewayAddress
	if gw == "" {
		gw = strings.TrimSuffix(r.Host, ":443")
	}
	file, id, err := p.RDPFile(sess.User, gw)
	if err != nil {
		p.log.Warn("could not write an .rdp file", zap.String("user", sess.User), zap.Error(err))
		writePage(w, page{Status: http.StatusInternalServerError, Title: "No Remote Desktop file", Message: "The pool could not write your Remote Desktop file; try again, or ask the pool's operators."})
		return http.StatusInternalServerError
	}
	p.log.Info(".rdp file issued on the users' page", zap.String("user", sess.User), zap.String("token_id", id), zap.String("client", r.RemoteAddr))
	w.Header().Set("Content-Type", "application/x-rdp")
	w.Header().Set("Content-Disposition", `attachment; filename="`+sess.User+`-pool.rdp"`)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(file)
	return http.StatusOK
}

// origin is the request's own scheme://host. Behind a proxy that ends TLS
// (http.tls false), the proxy's X-Forwarded-Proto says https: a browser
// cannot set that header on a cross-site form, so trusting it gives an
// attacker nothing.
func origin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	} else if p, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(p), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// callback finishes a sign-in and starts the page's session.
func (p *userPage) callback(w http.ResponseWriter, r *http.Request) int {
	id, _, err := p.SignIn.Finish(w, r, origin(r)+PagePrefix+"callback")
	if err != nil {
		status := http.StatusForbidden
		if errors.Is(err, identity.ErrProviderUnavailable) {
			status = http.StatusBadGateway
		}
		p.log.Info("users' page: sign-in failed", zap.String("client", r.RemoteAddr), zap.Error(err))
		identity.WritePage(w, status, "Sign-in failed", identity.UserMessage(err), PagePrefix+"signin")
		return status
	}
	p.SignIn.SetSession(w, r, identity.WebSession{User: id.User, Subject: id.Subject, Name: id.Name})
	p.log.Info("users' page: signed in", zap.String("user", id.User), zap.String("client", r.RemoteAddr))
	identity.Continue(w, PagePrefix)
	return http.StatusOK
}

// csrfToken is the form token of the browser session whose cookie value
// is cookie: an HMAC of it, so it changes with every sign-in and a page
// of another session's cannot be replayed.
func (p *userPage) csrfToken(cookie string) string {
	m := hmac.New(sha256.New, p.csrfKey)
	m.Write([]byte(cookie))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkPost admits a state change: a session, a same-origin Origin and
// the session's form token. It answers the refusal itself and returns
// its status, or 0 when the request may go on (its form parsed).
func (p *userPage) checkPost(w http.ResponseWriter, r *http.Request, signedIn bool) int {
	if o := r.Header.Get("Origin"); o == "" || o != origin(r) {
		p.log.Info("users' page: cross-origin form refused", zap.String("client", r.RemoteAddr))
		writePage(w, page{Status: http.StatusForbidden, Title: "Refused", Message: "This form was not sent from this site's page. Open the page and try again."})
		return http.StatusForbidden
	}
	if !signedIn {
		writePage(w, page{Status: http.StatusForbidden, Title: "Signed out", Message: "Your session ended. Sign in again at " + PagePrefix + "."})
		return http.StatusForbidden
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxPageForm)
	if err := r.ParseForm(); err != nil {
		writePage(w, page{Status: http.StatusBadRequest, Title: "Bad request", Message: "The form could not be read."})
		return http.StatusBadRequest
	}
	c, _ := r.Cookie(p.SignIn.Name) // present: the session was read from it
	if got := r.PostForm.Get("csrf"); got == "" || !hmac.Equal([]byte(got), []byte(p.csrfToken(c.Value))) {
		p.log.Info("users' page: form without its token refused", zap.String("client", r.RemoteAddr))
		writePage(w, page{Status: http.StatusForbidden, Title: "Refused", Message: "This form is out of date. Open the page again and try again."})
		return http.StatusForbidden
	}
	return 0
}

func (p *userPage) signOut(w http.ResponseWriter, r *http.Request, sess identity.WebSession, signedIn bool) int {
	if st := p.checkPost(w, r, signedIn); st != 0 {
		return st
	}
	p.SignIn.ClearSession(w, r)
	p.log.Info("users' page: signed out", zap.String("user", sess.User), zap.String("client", r.RemoteAddr))
	identity.WritePage(w, http.StatusOK, "Signed out", "You are signed out of the pool's page. Your sessions and keys are not affected.", PagePrefix+"signin")
	return http.StatusOK
}

func (p *userPage) forget(w http.ResponseWriter, r *http.Request, sess identity.WebSession, signedIn bool) int {
	if st := p.checkPost(w, r, signedIn); st != 0 {
		return st
	}
	fp := r.PostForm.Get("fingerprint")
	if p.Bindings == nil || fp == "" || len(fp) > 100 {
		writePage(w, page{Status: http.StatusBadRequest, Title: "Bad request", Message: "No key to forget was named."})
		return http.StatusBadRequest
	}
	if err := p.Bindings.Forget(r.Context(), sess.User, fp); err != nil {
		p.log.Error("users' page: forgetting a key failed", zap.String("user", sess.User), zap.String("client", r.RemoteAddr), zap.Error(err))
		return p.renderError(w, r, sess, http.StatusServiceUnavailable, "The key could not be forgotten now; try again in a moment.")
	}
	p.log.Info("users' page: key forgotten", zap.String("user", sess.User), zap.String("fingerprint", fp), zap.String("client", r.RemoteAddr))
	http.Redirect(w, r, PagePrefix+"?done=forgot", http.StatusSeeOther)
	return http.StatusSeeOther
}

func (p *userPage) move(w http.ResponseWriter, r *http.Request, sess identity.WebSession, signedIn bool) int {
	if st := p.checkPost(w, r, signedIn); st != 0 {
		return st
	}
	if p.NoNodeChoice {
		return p.renderError(w, r, sess, http.StatusForbidden, "Choosing a node is turned off on this pool.")
	}
	node := r.PostForm.Get("node")
	err := p.bal.Choose(sess.User, node, p.pageProto())
	if err != nil {
		shown := "that node"
		if validNodeName(node) {
			shown = node
		}
		reason := ""
		switch {
		case errors.Is(err, balancer.ErrUnknownNode):
			reason = "it is not in the pool"
		case errors.Is(err, balancer.ErrNodeDown):
			reason = "it is down"
		case errors.Is(err, balancer.ErrDraining):
			reason = "it is being drained and takes no new users"
		case errors.Is(err, balancer.ErrNodeFull):
			reason = "it is full"
		}
		if reason == "" {
			p.log.Error("users' page: move failed", zap.String("user", sess.User), zap.String("node", shown), zap.String("client", r.RemoteAddr), zap.Error(err))
			return p.renderError(w, r, sess, http.StatusServiceUnavailable, "You could not be moved now; try again in a moment.")
		}
		p.log.Info("users' page: move refused", zap.String("user", sess.User), zap.String("node", shown), zap.String("client", r.RemoteAddr), zap.Error(err))
		return p.renderError(w, r, sess, http.StatusConflict, "You cannot move to "+shown+" now: "+reason+".")
	}
	p.log.Info("users' page: moved", zap.String("user", sess.User), zap.String("node", node), zap.String("client", r.RemoteAddr))
	http.Redirect(w, r, PagePrefix+"?done=moved", http.StatusSeeOther)
	return http.StatusSeeOther
}

// validNodeName reports whether name could be a node's: 1 to 64 letters,
// digits, '.', '_' and '-' (as the SSH front end's choice allows).
func validNodeName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	return strings.IndexFunc(name, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')
	}) < 0
}

// notice is a line at the top of the page: what was just done, or why it
// could not be.
type notice struct {
	Text  string
	Error bool
	moved bool // after a move: the text names the node the user is pinned to now
}

// doneNotices are the lines after a redirect (?done=), fixed texts: a
// link can show no words of its own on the page.
var doneNotices = map[string]string{
	"forgot": "The key is forgotten: it no longer logs you in without signing in.",
}

func (p *userPage) renderError(w http.ResponseWriter, r *http.Request, sess identity.WebSession, status int, text string) int {
	p.render(w, r, sess, notice{Text: text, Error: true}, status)
	return status
}

// pageData is what userpage.html shows.
type pageData struct {
	User, Name string
	CSRF       string
	Notice     notice
	Node       *nodeView // nil: no node yet
	SSH        string    // the ssh command; "" for none
	HubLink    string
	Sessions   []sessionView
	ShowKeys   bool
	Keys       []keyView
	KeysError  bool
	Moves      []nodeView
	NoChoice   bool
	RDP        bool // offer the .rdp file
}

type nodeView struct {
	Name     string
	Load     string // "cpu 35%, memory 40%", "" when not measured
	Sessions int
}

type sessionView struct {
	Protocol, Node, Client, Started string
}

type keyView struct {
	Fingerprint, Type, Until string
}

func (p *userPage) render(w http.ResponseWriter, r *http.Request, sess identity.WebSession, n notice, status int) {
	c, _ := r.Cookie(p.SignIn.Name)
	d := pageData{User: sess.User, Name: sess.Name, Notice: n, NoChoice: p.NoNodeChoice, ShowKeys: p.Bindings != nil, RDP: p.RDPFile != nil,
		HubLink: "/user/" + sess.User + "/"}
	if d.Name == "" {
		d.Name = sess.User
	}
	if c != nil {
		d.CSRF = p.csrfToken(c.Value)
	}
	byName := map[string]balancer.NodeStatus{}
	for _, ns := range p.bal.Nodes() {
		byName[ns.Name] = ns
	}
	view := func(name string) nodeView {
		ns := byName[name]
		return nodeView{Name: name, Load: loadText(ns.Load, ns.LoadStale), Sessions: ns.Sessions.Total()}
	}
	proto := p.pageProto()
	if pin, ok := p.bal.Pinned(sess.User, proto); ok {
		v := view(pin.Name)
		d.Node = &v
	}
	if n.moved {
		d.Notice.Text = "Your next sessions go to your choice; sessions open elsewhere go on."
		if d.Node != nil {
			d.Notice.Text = "Your next sessions go to " + d.Node.Name + "; sessions open elsewhere go on."
		}
	}
	if p.showSSH {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if p.sshPort != "" {
			d.SSH = "ssh -p " + p.sshPort + " " + sess.User + "@" + host
		} else {
			d.SSH = "ssh " + sess.User + "@" + host
		}
	}
	for _, si := range p.bal.Sessions() {
		if si.User == sess.User {
			d.Sessions = append(d.Sessions, sessionView{Protocol: string(si.Protocol), Node: si.Node, Client: si.Client, Started: si.Started.UTC().Format("2006-01-02 15:04 UTC")})
		}
	}
	if p.Bindings != nil {
		bs, err := p.Bindings.List(r.Context())
		if err != nil {
			p.log.Error("users' page: listing keys failed", zap.String("user", sess.User), zap.Error(err))
			d.KeysError = true
		}
		for _, b := range bs {
			if b.User == sess.User {
				d.Keys = append(d.Keys, keyView{Fingerprint: b.Fingerprint, Type: b.KeyType, Until: b.Until.UTC().Format("2006-01-02 15:04 UTC")})
			}
		}
	}
	if !p.NoNodeChoice {
		for _, n := range p.bal.Choosable(sess.User, proto) {
			if d.Node == nil || n.Name != d.Node.Name {
				d.Moves = append(d.Moves, view(n.Name))
			}
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if err := userPageTmpl.Execute(w, d); err != nil {
		p.log.Debug("users' page: writing the page failed", zap.Error(err))
	}
}

// loadText shows a node's measured load, "" when nothing is measured.
func loadText(l balancer.Load, stale bool) string {
	if !l.Measured() {
		return ""
	}
	var parts []string
	for _, f := range []struct {
		name string
		v    float64
	}{{"cpu", l.CPU}, {"memory", l.Memory}, {"gpu", l.GPU}, {"gpu memory", l.GPUMemory}} {
		if !math.IsNaN(f.v) {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", f.name, f.v*100))
		}
	}
	out := strings.Join(parts, ", ")
	if stale {
		out += " (not fresh)"
	}
	return out
}

//go:embed userpage.html
var userPageFS embed.FS

var userPageTmpl = template.Must(template.ParseFS(userPageFS, "userpage.html"))

// statusWriter keeps the status a handler of another package answered,
// for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
