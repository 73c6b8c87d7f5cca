package httpgw

import (
	"crypto/tls"
	"net/http"
	"slices"
	"strings"
)

// receivedPath is the request's path as the client sent it, without the
// query.
func receivedPath(r *http.Request) string {
	p := r.RequestURI
	if p == "" || p == "*" || !strings.HasPrefix(p, "/") {
		return r.URL.EscapedPath()
	}
	p, _, _ = strings.Cut(p, "?")
	return p
}

// aeadSuites are the TLS 1.2 suites offered: ECDHE with AES-GCM or
// ChaCha20-Poly1305.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// maxHeaderBytes bounds a browser request's header, on TLS and on the
// plain-HTTP answer of the TLS port alike.
const maxHeaderBytes = 64 << 10

// AdminCookie is the admin dashboard's session cookie. Browsers send it
// to every port of the host that set it, so it is taken out of requests
// before they reach a hub, where a user's server could read it.
const AdminCookie = "poolgate_admin"

// stripPrivateCookies removes the gateway's own cookies (the admin
// dashboard's, the users' page's session and sign-in attempt) from r's
// Cookie headers: a user's server must never read another user's session.
func (s *Server) stripPrivateCookies(r *http.Request) {
	hs := r.Header["Cookie"]
	found := false
	for _, h := range hs {
		for _, name := range s.private {
			if strings.Contains(h, name) {
				found = true
			}
		}
	}
	if !found {
		return
	}
	out := hs[:0:0]
	for _, h := range hs {
		var kept []string
		for part := range strings.SplitSeq(h, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if slices.Contains(s.private, name) {
				continue
			}
			kept = append(kept, strings.TrimSpace(part))
		}
		if len(kept) > 0 {
			out = append(out, strings.Join(kept, "; "))
		}
	}
	if len(out) == 0 {
		r.Header.Del("Cookie")
		return
	}
	r.Header["Cookie"] = out
}
