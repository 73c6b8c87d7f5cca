package httpgw

import (
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/username"
)

func TestUserFromPath(t *testing.T) {
	for _, tt := range []struct {
		path, want string
		bad        bool
	}{
		{"/user/alice/lab", "alice", false},
		{"/user/alice", "alice", false},
		{"/user/Alice/tree", "alice", false},
		{"/user/ALICE/tree", "alice", false},
		{"/user/first.last%40example.org/", "first.last@example.org", false},
		{"/user/First.Last%40Example.org/", "first.last@example.org", false},
		{"/user/j%C3%BCrgen/", "", true},  // not a Linux login name
		{"/user/%E2%84%AAate/", "", true}, // the Kelvin sign is no K
		{"/user/alice+node-1/", "", true},
		{"/user/alice%20smith/", "", true},
		{"/user/%1B%5B31m/", "", true},
		{"/user/", "", false},
		{"/hub/login", "", false},
		{"/users/alice/", "", false},
		{"/user/%2e%2e/", "", true},
		{"/user/./", "", true},
		{"/user/alice%2Fbob/", "", true},
		{"/user/alice%5Cbob/", "", true},
		{"/user/%00/", "", true},
		{"/user/%zz/", "", true},
		{"/user/%ff/", "", true},
		{"/user/" + strings.Repeat("a", 65) + "/", "", true},
	} {
		got, err := userFromPath(tt.path)
		if got != tt.want || (err != nil) != tt.bad {
			t.Errorf("userFromPath(%q) = %q, %v; want %q, bad=%v", tt.path, got, err, tt.want, tt.bad)
		}
	}
}

func TestScanCookies(t *testing.T) {
	for _, tt := range []struct {
		headers        []string
		user, affinity string
	}{
		{[]string{"jupyterhub-user-alice=2|1:0|xyz; poolgate-node=abc.def"}, "alice", "abc.def"},
		{[]string{"_xsrf=1", `poolgate-node="q.r"`, "jupyterhub-user-bob%40corp=v"}, "bob@corp", "q.r"},
		{[]string{"jupyterhub-user-alice-oauth-state=s; jupyterhub-user-carol=v"}, "carol", ""},
		{[]string{"jupyterhub-user-Carol=v"}, "carol", ""},
		{[]string{"jupyterhub-user-%1B%5B31m=v; jupyterhub-user-dave=v"}, "dave", ""},
		{[]string{"jupyterhub-user-alice-oauth-state-abc=s"}, "", ""},
		{[]string{"jupyterhub-user-%2e%2e=v; jupyterhub-user-a%2Fb=v"}, "", ""},
		{[]string{"jupyterhub-hub-login=x; jupyterhub-session-id=y"}, "", ""},
		{[]string{";;; =; poolgate-node; poolgate-node=first; poolgate-node=second"}, "", "first"},
	} {
		u, a := scanCookies(tt.headers, AffinityCookie)
		if u != tt.user || a != tt.affinity {
			t.Errorf("scanCookies(%q) = %q, %q; want %q, %q", tt.headers, u, a, tt.user, tt.affinity)
		}
	}
}

func TestUserFromLoginForm(t *testing.T) {
	for _, tt := range []struct {
		body, want string
		bad        bool
	}{
		{"username=alice&password=secret", "alice", false},
		{"password=x&username=+Bob+", "bob", false},
		{"username=ALICE&password=x", "alice", false},
		{"username=al+ice", "", true},
		{"username=%1B%5B31malice", "", true},
		{"password=x", "", false},
		{"username=a%2Fb", "", true},
		{"username=%zz", "", true},
	} {
		got, err := userFromLoginForm([]byte(tt.body))
		if got != tt.want || (err != nil) != tt.bad {
			t.Errorf("userFromLoginForm(%q) = %q, %v; want %q, bad=%v", tt.body, got, err, tt.want, tt.bad)
		}
	}
}

func TestAffinityCookie(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	s := newSigner([]byte("0123456789abcdef0123456789abcdef"))
	v := s.encode(affinity{Node: "node-2", User: "alice", Expires: now.Add(time.Hour)})
	a, err := s.decode(v, now)
	if err != nil || a.Node != "node-2" || a.User != "alice" {
		t.Fatalf("round trip: %+v, %v", a, err)
	}
	if _, err := s.decode(v, now.Add(2*time.Hour)); err == nil {
		t.Fatal("an expired cookie was accepted")
	}
	other := newSigner([]byte("another key, another gateway...."))
	if _, err := other.decode(v, now); err == nil {
		t.Fatal("a cookie signed with another key was accepted")
	}
	// Forge: change the node in the payload, keep the MAC.
	p64, m64, _ := strings.Cut(v, ".")
	payload, _ := decodeB64(p64)
	forged := strings.Replace(string(payload), "node-2", "node-1", 1)
	if _, err := s.decode(encodeB64([]byte(forged))+"."+m64, now); err == nil {
		t.Fatal("a forged cookie was accepted")
	}
	// A name signed under an older, looser rule keeps the node and
	// loses the name.
	old := s.encode(affinity{Node: "node-2", User: "jürgen", Expires: now.Add(time.Hour)})
	if a, err := s.decode(old, now); err != nil || a.Node != "node-2" || a.User != "" {
		t.Fatalf("cookie naming jürgen: %+v, %v", a, err)
	}
	for _, junk := range []string{"", ".", "abc", "a.b", v + "x", strings.Repeat("A", 5000) + ".x"} {
		if _, err := s.decode(junk, now); err == nil {
			t.Fatalf("junk %q accepted", junk)
		}
	}
}

// FuzzRequestUser feeds the request-to-user parsers arbitrary paths,
// cookie headers and form bodies: they must not panic, and any user they
// return must be a name the gateway may route by.
func FuzzRequestUser(f *testing.F) {
	f.Add("/user/alice/lab", "jupyterhub-user-bob=1; poolgate-node=a.b", []byte("username=carol&password=x"))
	f.Add("/user/%2e%2e/", "jupyterhub-user-%2Fx=1", []byte("username=a%2Fb"))
	f.Add("/user/alice%2Fbob/", ";;==;", []byte("%zz=&username"))
	f.Fuzz(func(t *testing.T, path, cookie string, form []byte) {
		check := func(from, u string) {
			if u == "" {
				return
			}
			if !username.Valid(u) {
				t.Fatalf("%s gave unsafe user %q", from, u)
			}
		}
		u, err := userFromPath(path)
		if err == nil {
			check("path", u)
		}
		cu, _ := scanCookies([]string{cookie}, AffinityCookie)
		check("cookie", cu)
		fu, err := userFromLoginForm(form)
		if err == nil {
			check("form", fu)
		}
	})
}

// FuzzAffinityDecode: no input makes decode panic or accept a value the
// signer did not make.
func FuzzAffinityDecode(f *testing.F) {
	s := newSigner([]byte("0123456789abcdef0123456789abcdef"))
	now := time.Unix(1_800_000_000, 0)
	f.Add(s.encode(affinity{Node: "n", User: "u", Expires: now.Add(time.Hour)}))
	f.Add("AA.BB")
	f.Fuzz(func(t *testing.T, v string) {
		a, err := s.decode(v, now)
		if err == nil && s.encode(a) != v {
			// The only accepted values are the canonical encodings.
			if _, err2 := s.decode(s.encode(a), now); err2 != nil {
				t.Fatalf("accepted %q, whose re-encoding does not decode", v)
			}
		}
	})
}

func decodeB64(s string) ([]byte, error) { return b64.DecodeString(s) }
func encodeB64(b []byte) string          { return b64.EncodeToString(b) }

func TestCookieCache(t *testing.T) {
	s := newSigner([]byte("0123456789abcdef0123456789abcdef"))
	c := newCookieCache(s, true)
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	h1 := c.header("node-1", "alice", now)
	if h1 != c.header("node-1", "alice", now.Add(time.Minute)) {
		t.Fatal("a header was not reused within the hour")
	}
	h2 := c.header("node-1", "alice", now.Add(2*time.Hour))
	if h1 == h2 || !strings.Contains(h2, "Secure") || !strings.Contains(h2, "HttpOnly") || !strings.Contains(h2, "SameSite=Lax") {
		t.Fatalf("headers %q then %q", h1, h2)
	}
	v := strings.TrimPrefix(strings.SplitN(h1, ";", 2)[0], AffinityCookie+"=")
	// Values issued here and values from another replica with the same key
	// decode alike; the cache never accepts what the signer would not.
	other := newCookieCache(s, true)
	for _, cc := range []*cookieCache{c, other} {
		a, err := cc.decode(v, now.Add(24*time.Hour))
		if err != nil || a.Node != "node-1" || a.User != "alice" {
			t.Fatalf("decode: %+v %v", a, err)
		}
		if _, err := cc.decode(v, now.Add(31*24*time.Hour)); err == nil {
			t.Fatal("an expired cookie decoded")
		}
	}
	if _, err := c.decode(v[:len(v)-2]+"AA", now); err == nil {
		t.Fatal("a damaged value decoded")
	}
}
