package admin

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/balancer"
)

// TestPinAPIUserNames is issue 25 item 4 and issue 22 in the admin API:
// a user name goes through the front ends' rule, in canonical form
// ("Alice" is alice), and a name the rule refuses (an escape sequence, a
// '+', a slash) is 400 with an error that says what is wrong with it.
func TestPinAPIUserNames(t *testing.T) {
	b := testPool(t)
	s, err := New(Config{}, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	send := func(method, path, body string) (int, map[string]any, string) {
		t.Helper()
		req := localRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, rec.Body.String())
		}
		return rec.Code, out, rec.Body.String()
	}

	code, body, _ := send("POST", "/api/users/Alice/pin", `{"node": "node-2"}`)
	if code != 200 || body["user"] != "alice" || body["node"] != "node-2" {
		t.Fatalf("pin Alice: %d %v", code, body)
	}
	pins := b.Pins()
	for _, p := range pins {
		if p.User != "alice" && p.User != "bob" {
			t.Fatalf("pins %+v: a user other than alice and bob", pins)
		}
	}
	if n, ok := b.Pinned("alice", balancer.SSH); !ok || n.Name != "node-2" {
		t.Fatalf("alice pinned to %v %v after pinning Alice", n, ok)
	}
	if code, body, _ := send("GET", "/api/sessions?user=ALICE", ""); code != 200 || len(body["sessions"].([]any)) != 2 {
		t.Fatalf("sessions of ALICE: %d %v", code, body)
	}

	for _, tt := range []struct{ name, want string }{
		{"\x1b[31m", `character '\x1b' at position 1`},
		{"alice\x1b]0;owned\x07", `character '\x1b' at position 6`},
		{"alice+node-1", `character '+' at position 6`},
		{"a/b", `character '/' at position 2`},
		{"j\u00fcrgen", `character '\u00fc' at position 2`},
		{strings.Repeat("a", 65), "65 bytes long"},
	} {
		esc := url.PathEscape(tt.name)
		for _, req := range []struct{ method, path, body string }{
			{"POST", "/api/users/" + esc + "/pin", `{"node": "node-1"}`},
			{"POST", "/api/users/" + esc + "/pin", `not json`},
			{"DELETE", "/api/users/" + esc + "/pin", ""},
			{"GET", "/api/sessions?user=" + url.QueryEscape(tt.name), ""},
		} {
			code, body, raw := send(req.method, req.path, req.body)
			msg, _ := body["error"].(string)
			if code != 400 || !strings.Contains(msg, "invalid user name") || !strings.Contains(msg, tt.want) {
				t.Errorf("%s %s: %d %q; want 400 saying %q", req.method, req.path, code, msg, tt.want)
			}
			if strings.ContainsAny(raw, "\x1b\x07") {
				t.Errorf("%s %s: the answer holds control bytes: %q", req.method, req.path, raw)
			}
		}
	}
	if n, ok := b.Pinned("alice", balancer.SSH); !ok || n.Name != "node-2" {
		t.Fatalf("refused requests moved alice's pin: %v %v", n, ok)
	}
	for _, p := range b.Pins() {
		if p.User != "alice" && p.User != "bob" {
			t.Fatalf("a refused name was pinned: %+v", b.Pins())
		}
	}

	if code, body, _ := send("DELETE", "/api/users/ALICE/pin", ""); code != 200 || body["user"] != "alice" {
		t.Fatalf("unpin ALICE: %d %v", code, body)
	}
}
