package admin

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"
)

// guard refuses, before any endpoint sees them:
//
//   - requests whose Host is a name other than the listen address's, a
//     loopback name or one of admin.hosts (421): a page on a rebound DNS
//     name must not read the API through the admin's browser. IP literals
//     are always accepted; they cannot be rebound.
//   - state-changing requests (any method but GET, HEAD and OPTIONS) that
//     a browser marks as coming from another site: Sec-Fetch-Site other
//     than same-origin or none, or, from a browser that does not send
//     it, an Origin other than the API's own (403). The CLI and curl
//     send neither header and pass.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r.Host) {
			s.log.Info("admin request with a foreign Host refused", hostField(r.Host), clientField(r))
			writeError(w, http.StatusMisdirectedRequest, "this admin API does not answer for the host name "+quoteHost(r.Host)+"; add it to admin.hosts if it is yours")
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			if why := crossSite(r); why != "" {
				s.log.Info("cross-site admin request refused", clientField(r))
				writeError(w, http.StatusForbidden, "cross-site request refused: "+why)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether the Host header names this API.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	switch {
	case host == "":
		return true // HTTP/1.0 without Host: no browser sends that
	case net.ParseIP(host) != nil:
		return true
	case host == "localhost" || strings.HasSuffix(host, ".localhost"):
		return true
	case host == s.listenHost, host == s.metricsHost && host != "":
		return true
	}
	for _, h := range s.hosts {
		if host == h {
			return true
		}
	}
	return false
}

// crossSite says why a state-changing request came from another site, or
// "" when it did not (or is not from a browser).
func crossSite(r *http.Request) string {
	// A browser that sends Sec-Fetch-Site (no page can set it) is
	// believed: the sign-in form's POST has Origin "null", since the pages
	// are served with Referrer-Policy no-referrer.
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "same-origin", "none":
		return ""
	case "":
	default:
		return "Sec-Fetch-Site is " + site
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return "Origin " + origin + " is not this API's"
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if !strings.EqualFold(u.Scheme, scheme) || !strings.EqualFold(u.Host, r.Host) {
		return "Origin " + origin + " is not this API's"
	}
	return ""
}

func clientField(r *http.Request) zap.Field { return zap.String("client", r.RemoteAddr) }
func hostField(h string) zap.Field {
	if len(h) > 100 {
		h = h[:100]
	}
	return zap.String("host", h)
}

// quoteHost shortens and quotes a Host header for a message.
func quoteHost(h string) string {
	if len(h) > 100 {
		h = h[:100] + "…"
	}
	return `"` + h + `"`
}
