package identity

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWebSessionCookie: a session cookie holds who signed in until it
// expires; a cookie altered, signed with another key or for another
// front end opens nothing.
func TestWebSessionCookie(t *testing.T) {
	now := time.Now()
	w := &Web{Name: "poolgate_user", Key: NewWebKey(), Now: func() time.Time { return now }, TTL: time.Hour}
	rec := httptest.NewRecorder()
	w.SetSession(rec, httptest.NewRequest("GET", "/", nil), WebSession{User: "alice", Subject: "sub-a"})
	c := rec.Result().Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Name != "poolgate_user" {
		t.Fatalf("session cookie %+v", c)
	}
	req := func(v string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(&http.Cookie{Name: "poolgate_user", Value: v})
		return r
	}
	if s, ok := w.Session(req(c.Value)); !ok || s.User != "alice" || s.Subject != "sub-a" {
		t.Fatalf("session read back: %+v %v", s, ok)
	}
	payload, mac, _ := strings.Cut(c.Value, ".")
	forged := strings.Replace(payload, "a", "b", 1) + "." + mac
	other := &Web{Name: "poolgate_user", Key: NewWebKey(), Now: w.Now}
	ops := &Web{Name: "poolgate_ops", Key: w.Key, Now: w.Now}
	for name, check := range map[string]func() bool{
		"altered":     func() bool { _, ok := w.Session(req(forged)); return ok },
		"another key": func() bool { _, ok := other.Session(req(c.Value)); return ok },
		"another front": func() bool {
			r := httptest.NewRequest("GET", "/", nil)
			r.AddCookie(&http.Cookie{Name: "poolgate_ops", Value: c.Value})
			_, ok := ops.Session(r)
			return ok
		},
		"expired": func() bool { now = now.Add(2 * time.Hour); _, ok := w.Session(req(c.Value)); return ok },
	} {
		if check() {
			t.Errorf("a cookie %s opened a session", name)
		}
	}
}

// TestLocalPath: a page to return to after a sign-in stays on this site.
func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/_poolgate/": "/_poolgate/", "/": "/", "": "/", "//evil.test/": "/", "/\\evil.test": "/",
		"https://evil.test/": "/", "/a\r\nSet-Cookie: x": "/",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}
