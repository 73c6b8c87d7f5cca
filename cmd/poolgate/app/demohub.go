package app

import (
	"context"
	"html/template"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DemoHub is a tiny stand-in for a node's JupyterHub in `poolgate demo`:
// a login form, a login cookie valid only on this node (as each real hub
// has its own secret), a per-user page naming the node, and /hub/health.
// Enough to watch the HTTP gateway keep a browser on its user's node.
type DemoHub struct {
	name string
	ln   net.Listener
	srv  *http.Server
	wg   sync.WaitGroup
}

var demoHubPage = template.Must(template.New("hub").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}
input,button{font:inherit;padding:.3rem .6rem}</style></head><body>
<h1>{{.Title}}</h1>
{{if .User}}<p>Hello <b>{{.User}}</b>: your server runs on <b id="node">{{.Node}}</b>.</p>
<p>Open this page in another browser, or <code>ssh {{.User}}@…</code> through the gateway: you land on {{.Node}} too, while you have a session there.</p>
<p><a href="/hub/logout">Log out</a></p>
{{else}}<form method="post" action="/hub/login">
<p>Demo hub on <b>{{.Node}}</b>. Any of alice, bob, carol, dave, erin; any password.</p>
<p><input name="username" id="username_input" placeholder="user name" autofocus>
<input name="password" id="password_input" type="password" placeholder="password">
<button id="login_submit">Sign in</button></p></form>{{end}}
</body></html>`))

// StartDemoHub serves a demo hub for the named node on addr.
func StartDemoHub(name, addr string) (*DemoHub, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &DemoHub{name: name, ln: ln}
	mux := http.NewServeMux()
	loggedIn := func(r *http.Request) string {
		c, err := r.Cookie("jupyterhub-hub-login")
		if err != nil {
			return ""
		}
		node, user, ok := strings.Cut(c.Value, ":")
		if !ok || node != name { // another node's login is not valid here
			return ""
		}
		return user
	}
	page := func(w http.ResponseWriter, title, user string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = demoHubPage.Execute(w, map[string]string{"Title": title, "User": user, "Node": name})
	}
	mux.HandleFunc("GET /hub/health", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /hub/login", func(w http.ResponseWriter, r *http.Request) { page(w, "Sign in", "") })
	mux.HandleFunc("POST /hub/login", func(w http.ResponseWriter, r *http.Request) {
		user := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
		if user == "" || strings.ContainsAny(user, "/:") {
			page(w, "Sign in", "")
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "jupyterhub-hub-login", Value: name + ":" + user, Path: "/hub/", HttpOnly: true})
		http.Redirect(w, r, "/hub/home", http.StatusFound)
	})
	mux.HandleFunc("GET /hub/logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "jupyterhub-hub-login", Path: "/hub/", MaxAge: -1})
		http.Redirect(w, r, "/hub/login", http.StatusFound)
	})
	mux.HandleFunc("GET /hub/home", func(w http.ResponseWriter, r *http.Request) {
		user := loggedIn(r)
		if user == "" {
			http.Redirect(w, r, "/hub/login", http.StatusFound)
			return
		}
		http.Redirect(w, r, "/user/"+user+"/", http.StatusFound)
	})
	mux.HandleFunc("GET /user/{user}/", func(w http.ResponseWriter, r *http.Request) {
		page(w, r.PathValue("user")+"'s server", r.PathValue("user"))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/hub/home", http.StatusFound) })
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		_ = h.srv.Serve(ln) // ends with ErrServerClosed from Close
	}()
	return h, nil
}

// Addr is where the demo hub listens.
func (h *DemoHub) Addr() string { return h.ln.Addr().String() }

// Close stops the demo hub.
func (h *DemoHub) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
	_ = h.srv.Close()
	h.wg.Wait()
}
