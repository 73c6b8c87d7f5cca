package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestDashboardOpenOnLoopback(t *testing.T) {
	s, err := New(Config{}, testPool(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, localRequest("GET", "/", nil))
	body := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || !strings.Contains(body, "api/nodes") {
		t.Fatalf("GET /: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	for _, ref := range []string{`src="http`, `href="http`, `src='http`, `url(http`, "@import", `fetch("http`} {
		if strings.Contains(body, ref) {
			t.Fatalf("the dashboard loads something from elsewhere (%s); it must be self-contained", ref)
		}
	}
}

func TestDashboardSignIn(t *testing.T) {
	const write, read = "write-token-0123456789", "read-token-0123456789"
	s, err := New(Config{Listen: "0.0.0.0:9090", TokenFile: writeTok(t, write), ReadTokenFile: writeTok(t, read)}, testPool(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	get := func(path string, c *http.Cookie) *httptest.ResponseRecorder {
		req := localRequest("GET", path, nil)
		if c != nil {
			req.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	post := func(path, form string, c *http.Cookie) *httptest.ResponseRecorder {
		req := localRequest("POST", path, strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if c != nil {
			req.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := get("/", nil); rec.Code != 401 || !strings.Contains(rec.Body.String(), `name="token"`) {
		t.Fatalf("GET / without token: %d (want 401 with the sign-in form)", rec.Code)
	}
	if rec := post("/login", "token=wrong-token-0123456789", nil); rec.Code != 401 || !strings.Contains(rec.Body.String(), "not valid") {
		t.Fatalf("wrong token: %d %q", rec.Code, rec.Body.String())
	}
	if rec := post("/login", "token="+strings.Repeat("x", 5000), nil); rec.Code != 400 {
		t.Fatalf("oversized form: %d", rec.Code)
	}
	signIn := func(tok string) *http.Cookie {
		rec := post("/login", "token="+url.QueryEscape(tok), nil)
		cookies := rec.Result().Cookies()
		if rec.Code != 303 || len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
			t.Fatalf("sign-in: %d %+v", rec.Code, cookies)
		}
		return cookies[0]
	}
	rc := signIn(read)
	if rec := get("/", rc); rec.Code != 200 {
		t.Fatalf("dashboard with the read cookie: %d", rec.Code)
	}
	if rec := get("/api/access", rc); !strings.Contains(rec.Body.String(), `"write":false`) {
		t.Fatalf("access with the read cookie: %s", rec.Body.String())
	}
	if rec := post("/api/nodes/node-1/drain", "", rc); rec.Code != 403 {
		t.Fatalf("drain with the read cookie: %d", rec.Code)
	}
	wc := signIn(write)
	if rec := get("/api/access", wc); !strings.Contains(rec.Body.String(), `"write":true`) {
		t.Fatalf("access with the write cookie: %s", rec.Body.String())
	}
	if rec := post("/api/nodes/node-1/drain", "", wc); rec.Code != 200 {
		t.Fatalf("drain with the write cookie: %d", rec.Code)
	}
	body, _ := io.ReadAll(get("/api/nodes", wc).Body)
	if !strings.Contains(string(body), `"state":"draining"`) {
		t.Fatalf("after drain: %s", body)
	}
}
