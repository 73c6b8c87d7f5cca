package identitytest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/poolgate/poolgate/gateway/identity"
)

// TestWebRoundTrip: identity.Web signs a browser in through the fake, and
// a code is good once.
func TestWebRoundTrip(t *testing.T) {
	p := New(t)
	prov, err := identity.New(p.Config(), identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	web := &identity.Web{Provider: prov, Name: "t", Key: identity.NewWebKey()}
	const back = "https://pool.test/cb"

	rec := httptest.NewRecorder()
	web.Begin(rec, httptest.NewRequest("GET", "/signin", nil), back, "/page")
	if rec.Code != http.StatusFound {
		t.Fatalf("Begin: %d %s", rec.Code, rec.Body)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(rec.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, _ := url.Parse(resp.Header.Get("Location"))
	finish := func() (*identity.Identity, string, error) {
		r := httptest.NewRequestWithContext(context.Background(), "GET", cb.String(), nil)
		for _, ck := range rec.Result().Cookies() {
			r.AddCookie(ck)
		}
		return web.Finish(httptest.NewRecorder(), r, back)
	}
	id, ret, err := finish()
	if err != nil || id.User != "alice" || id.Name != "Alice Example" || ret != "/page" {
		t.Fatalf("Finish: %+v %q %v", id, ret, err)
	}
	if _, _, err := finish(); err == nil {
		t.Fatal("a code was redeemed twice")
	}
}
