package identity

import (
	"strings"
	"testing"
	"unicode"

	"github.com/poolgate/poolgate/internal/username"
)

// shownSafely reports whether s may go to a terminal: no control
// characters but newlines, no format characters (bidi overrides).
func shownSafely(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool {
		return r != '\n' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r))
	})
}

func FuzzParseDeviceAuth(f *testing.F) {
	f.Add([]byte(`{"user_code":"FQK4XZ2B","device_code":"GMMhmHCXhWEzkobqIHGG_EnNYYsAkukHspeYUk9E8","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code FQK4XZ2B to authenticate."}`))
	f.Add([]byte(`{"user_code":"WDJB-MJHT","device_code":"x","verification_url":"https://www.google.com/device","expires_in":"1800","interval":5}`))
	f.Add([]byte(`{"user_code":"A","device_code":"d","verification_uri":"https://e.test/d","verification_uri_complete":"https://e.test/d?c=A","message":"\u001b[2Jhi A\r\nthere\u202e"}`))
	f.Add([]byte(`{"expires_in":-1,"interval":1e99}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := parseDeviceAuth(body)
		if err != nil {
			return
		}
		if a.DeviceCode == "" || a.UserCode == "" || a.VerificationURI == "" {
			t.Fatalf("accepted without a required field: %+v", a)
		}
		if a.Interval < defaultInterval/5 || a.Interval > maxInterval || a.ExpiresIn <= 0 || a.ExpiresIn > maxExpiry {
			t.Fatalf("unbounded times: %+v", a)
		}
		m := a.message()
		if !shownSafely(m) || !strings.Contains(m, a.UserCode) || len(m) > maxMessage+2*2048+200 {
			t.Fatalf("message unsafe or without the code: %q", m)
		}
	})
}

func FuzzParseTokenResponses(f *testing.F) {
	f.Add([]byte(`{"error":"authorization_pending","error_description":"AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.\r\nTrace ID: 0000aaaa\r\nCorrelation ID: aaaa0000\r\nTimestamp: 2026-12-07 10:00:00Z","error_codes":[70016],"timestamp":"2026-12-07 10:00:00Z","trace_id":"0000aaaa","correlation_id":"aaaa0000","error_uri":"https://login.microsoftonline.com/error?code=70016"}`))
	f.Add([]byte(`{"error":"slow_down"}`))
	f.Add([]byte(`{"error":"x\u001b[31m","error_description":"\u0007"}`))
	f.Add([]byte(`{"token_type":"Bearer","scope":"openid","expires_in":3599,"access_token":"a","id_token":"h.p.s"}`))
	f.Add([]byte(`{"error_codes":"not a list"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if e := parseTokenError(body); e != nil {
			if e.Code == "" && e.Error() != "" {
				t.Fatalf("error without code: %+v", e)
			}
			if msg := e.Error(); !shownSafely(msg) || strings.Contains(msg, "\n") {
				t.Fatalf("error text unsafe for a log line: %q", msg)
			}
		}
		_, _ = parseTokenResponse(body)
	})
}

func FuzzMapClaims(f *testing.F) {
	f.Add([]byte(`{"sub":"s","preferred_username":"Alice@contoso.com","groups":["g1"]}`), "preferred_username", "g1")
	f.Add([]byte(`{"sub":"s","preferred_username":"alice_fabrikam.com#EXT#@contoso.onmicrosoft.com"}`), "preferred_username", "")
	f.Add([]byte(`{"sub":"s","upn":"@","_claim_names":{"groups":"src1"},"hasgroups":"true"}`), "upn", "g")
	f.Add([]byte(`{"sub":"s","email":"a@b@c","groups":"one"}`), "email", "one")
	f.Fuzz(func(t *testing.T, raw []byte, claim, group string) {
		cfg := Config{OIDC: OIDCConfig{UsernameClaim: claim}}
		if group != "" {
			cfg.AllowedGroups = []string{group}
		}
		id, err := cfg.mapClaims(raw)
		if err != nil {
			if m := UserMessage(err); !shownSafely(m) || strings.Contains(m, "\n") {
				t.Fatalf("user message unsafe: %q", m)
			}
			return
		}
		if !username.Valid(id.User) || id.Subject == "" {
			t.Fatalf("accepted a bad identity: %+v", id)
		}
		if group != "" && (id.GroupsOverage || !id.inGroups(cfg.AllowedGroups)) {
			t.Fatalf("let in outside allowed_groups: %+v", id)
		}
	})
}
