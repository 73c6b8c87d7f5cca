package admin

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCrossSiteStateChangesAreRefused(t *testing.T) {
	b := testPool(t)
	s, err := New(Config{Listen: "127.0.0.1:9090"}, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	post := func(path string, hdr map[string]string) int {
		req := localRequest("POST", path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, hdr := range []map[string]string{
		{"Origin": "http://evil.example"},
		{"Origin": "null"},
		{"Origin": "https://127.0.0.1:9090"}, // another scheme is another origin
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:9090"},
	} {
		for _, path := range []string{"/api/nodes/node-1/drain", "/api/scale-in?idle=2h", "/login"} {
			if code := post(path, hdr); code != 403 {
				t.Fatalf("POST %s with %v: %d, want 403", path, hdr, code)
			}
		}
	}
	for _, n := range b.Nodes() {
		if n.State != "up" {
			t.Fatalf("a refused request drained %s: %s", n.Name, n.State)
		}
	}
	// The dashboard's own requests, the CLI and curl (neither header).
	for _, hdr := range []map[string]string{
		{"Origin": "http://127.0.0.1:9090", "Sec-Fetch-Site": "same-origin"},
		{"Origin": "http://127.0.0.1:9090"},
		{"Origin": "null", "Sec-Fetch-Site": "same-origin"}, // the sign-in form: Referrer-Policy no-referrer
		{},
	} {
		if code := post("/api/nodes/node-1/drain", hdr); code != 200 {
			t.Fatalf("drain with %v: %d, want 200", hdr, code)
		}
	}
}

func TestForeignHostIsRefused(t *testing.T) {
	s, err := New(Config{Listen: "gw.internal:9090", Hosts: []string{"Pool-Admin.example.com"}}, testPool(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	get := func(host string) int {
		req := localRequest("GET", "/api/sessions", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, host := range []string{"evil.example", "evil.example:9090", "127.0.0.1.evil.example", "localhost.evil.example"} {
		if code := get(host); code != 421 {
			t.Fatalf("Host %q: %d, want 421", host, code)
		}
	}
	for _, host := range []string{"127.0.0.1:9090", "localhost:9090", "[::1]:9090", "10.0.0.5:9090", "gw.internal:9090", "pool-admin.example.com", "POOL-ADMIN.example.com.:9090"} {
		if code := get(host); code != 200 {
			t.Fatalf("Host %q: %d, want 200", host, code)
		}
	}
	if err := (Config{Listen: "127.0.0.1:9090", Hosts: []string{"a.example:80"}}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "hosts[0]") {
		t.Fatalf("a host with a port: %v", err)
	}
}

func TestDashboardCookieIsAnOpaqueSession(t *testing.T) {
	const write = "write-token-0123456789"
	s, err := New(Config{Listen: "0.0.0.0:9090", TokenFile: writeTok(t, write)}, testPool(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.sess.now = func() time.Time { return now }
	h := s.Handler()
	req := localRequest("POST", "/login", strings.NewReader("token="+write))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	cookies := rec.Result().Cookies()
	if rec.Code != 303 || len(cookies) != 1 {
		t.Fatalf("sign-in: %d %v", rec.Code, cookies)
	}
	c := cookies[0]
	if strings.Contains(c.Value, write) || c.MaxAge <= 0 {
		t.Fatalf("the cookie carries the token or does not expire: %+v", c)
	}
	access := func(value string) string {
		req := localRequest("GET", "/api/access", nil)
		req.Header.Set("Cookie", cookieName+"="+value)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return strings.TrimSpace(rec.Body.String())
	}
	if got := access(c.Value); got != `{"read":true,"write":true}` {
		t.Fatalf("with the session: %s", got)
	}
	if got := access(write); !strings.Contains(got, "bearer token is required") {
		t.Fatalf("the raw token as the cookie still works: %s", got)
	}
	forged := strings.Replace(c.Value, "v1.2.", "v1.1.", 1)
	if got := access(forged); !strings.Contains(got, "bearer token is required") {
		t.Fatalf("a forged session works: %s", got)
	}
	now = now.Add(sessionTTL + time.Second)
	if got := access(c.Value); !strings.Contains(got, "bearer token is required") {
		t.Fatalf("an expired session works: %s", got)
	}
}
