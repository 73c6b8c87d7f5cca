package httpgw

import (
	"net/http"
	"strings"
)

// Which answers prove a user (DESIGN.md, "Only proven users count").
// Any request is routed by the user it names, but only these answers of
// the user's own node take or extend a session lease or a pin:
//
//   - POST /hub/login answered with a redirect that sets the hub's login
//     cookie (JupyterHub's LoginHandler.post redirects after
//     set_login_cookie; a failed login renders the form again, 200 in
//     JupyterHub 3, 403 since 4).
//   - A 2xx answer from the user's own single-user server on a path it
//     guards: /user/<name>/api/<…> and the page handlers (tree, lab,
//     notebooks, edit, files, view, doc). The hub never answers 2xx under
//     /user/<name>/ (a stopped server gets 424 or 503, a stranger a
//     redirect to /hub/login), and the server redirects a browser that is
//     not logged in to the hub's OAuth (302) or answers 403 to an API
//     call. /user/<name>/static/, /custom/, /nbextensions/ and the bare
//     /api (the version) answer anyone, so they prove nothing.
//   - A WebSocket under /user/<name>/ the server accepted (101): Jupyter
//     authenticates before it upgrades.

// hubLoginCookies are the names of the hub's login cookie
// (objects.Hub.cookie_name, with the __Host- prefix when
// cookie_host_prefix_enabled).
var hubLoginCookies = []string{"jupyterhub-hub-login", "__Host-jupyterhub-hub-login"}

// loginProven reports whether the hub's answer to POST /hub/login logged
// the browser in.
func loginProven(resp *http.Response) bool {
	if resp.StatusCode < 300 || resp.StatusCode >= 400 {
		return false
	}
	for _, sc := range resp.Header["Set-Cookie"] {
		name, rest, ok := strings.Cut(sc, "=")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		value, _, _ := strings.Cut(rest, ";")
		for _, want := range hubLoginCookies {
			if name == want && strings.Trim(value, `" `) != "" {
				return true
			}
		}
	}
	return false
}

// guardedRest reports whether rest, the escaped path after
// /user/<name>/, is one the single-user server answers only for a
// logged-in user.
func guardedRest(rest string) bool {
	first, more, _ := strings.Cut(rest, "/")
	switch first {
	case "api":
		return more != "" // the bare /api is the version, for anyone
	case "tree", "notebooks", "edit", "files", "view", "doc":
		return true
	case "lab":
		// lab/api/themes and lab/extensions are static files.
		return !strings.HasPrefix(more, "api/themes") && !strings.HasPrefix(more, "extensions")
	}
	return false
}

// serverProven reports whether the answer to a request under
// /user/<name>/ (rest being the escaped path after it) came from the
// user's own server for a logged-in user.
func serverProven(code int, rest string) bool {
	switch {
	case code == http.StatusSwitchingProtocols:
		return true
	case code >= 200 && code < 300:
		return guardedRest(rest)
	}
	return false
}

// restOfUserPath returns the escaped path after /user/<name>/ ("" when
// there is none).
func restOfUserPath(escapedPath string) string {
	rest, ok := strings.CutPrefix(escapedPath, "/user/")
	if !ok {
		return ""
	}
	_, after, _ := strings.Cut(rest, "/")
	return after
}
