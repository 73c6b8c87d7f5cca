package httpgw

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/poolgate/poolgate/internal/username"
)

// errBadUser means a request names a user that is not a valid user
// name (internal/username: empty, a slash, '+', a space, a control or
// non-ASCII character once unquoted, too long, ...). Such paths get 400
// instead of being routed.
var errBadUser = errors.New("invalid user name")

// checkUser validates a user name from a request and returns the
// balancer's key for it: its canonical form (internal/username), in
// lower case as JupyterHub's default normalize_username makes it, and as
// the SSH and RDP front ends key the same user.
func checkUser(name string) (string, error) {
	user, err := username.Canonical(name)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errBadUser, err)
	}
	return user, nil
}

// userFromPath returns the user named by a /user/<name> prefix of the
// request's escaped path ("" when the path has no such prefix). The name
// is one path segment, URL-unquoted after splitting, so "/user/a%2Fb/" is
// the (invalid) name "a/b" and never the user "a".
func userFromPath(escapedPath string) (string, error) {
	rest, ok := strings.CutPrefix(escapedPath, "/user/")
	if !ok {
		return "", nil
	}
	seg, _, _ := strings.Cut(rest, "/")
	if seg == "" {
		return "", nil // "/user/" alone: the hub's own redirect page
	}
	name, err := url.PathUnescape(seg)
	if err != nil {
		return "", errBadUser
	}
	return checkUser(name)
}

// userCookiePrefix starts the name of the cookie a user's single-user
// server sets: "jupyterhub-user-" + the URL-quoted user name.
const userCookiePrefix = "jupyterhub-user-"

// scanCookies walks the request's Cookie header values once, returning
// the first jupyterhub-user-<name> cookie's user (not its value, which
// the hub encrypts) and the raw value of the cookie named affinity. It
// does not allocate for the common header, unlike http.Request.Cookies.
// A malformed user cookie name is skipped, not an error: a browser may
// hold cookies from elsewhere.
func scanCookies(headers []string, affinity string) (user, aff string) {
	for _, h := range headers {
		for len(h) > 0 {
			var part string
			part, h, _ = strings.Cut(h, ";")
			part = strings.TrimSpace(part)
			name, value, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			switch {
			case name == affinity && aff == "":
				aff = strings.Trim(value, `"`)
			case user == "" && strings.HasPrefix(name, userCookiePrefix):
				quoted := name[len(userCookiePrefix):]
				// The OAuth state cookie is <client id>-oauth-state[-<n>];
				// its prefix is not the user's whole name.
				if i := strings.Index(quoted, "-oauth-state"); i >= 0 {
					continue
				}
				n, err := url.QueryUnescape(quoted)
				if err != nil {
					continue
				}
				if key, err := checkUser(n); err == nil {
					user = key
				}
			}
		}
	}
	return user, aff
}

// userFromLoginForm returns the username field of a URL-encoded login
// form body ("" when there is none), without the spaces around it that
// the hub strips too.
func userFromLoginForm(body []byte) (string, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return "", errBadForm
	}
	name := strings.TrimSpace(vals.Get("username"))
	if name == "" {
		return "", nil
	}
	return checkUser(name)
}

var errBadForm = errors.New("malformed login form")
