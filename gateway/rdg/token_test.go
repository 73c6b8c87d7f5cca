package rdg

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fixedSigner signs with testKey at a time the test moves.
func fixedSigner(now *time.Time) *Signer {
	return &Signer{Key: testKey, Now: func() time.Time { return *now }}
}

// signRaw signs claims JSON by hand, as the signer does.
func signRaw(key []byte, claims []byte) string {
	payload := base64.RawURLEncoding.EncodeToString(claims)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("pg1." + payload))
	return "pg1." + payload + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestTokenRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := fixedSigner(&now)
	tok, c, err := s.Issue("Alice", "n2", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "pg1.") || strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is not pg1.<claims>.<mac>", tok)
	}
	if c.User != "alice" || c.Node != "n2" || c.Issued != now.Unix() || c.Expires != now.Add(10*time.Minute).Unix() || c.ID == "" {
		t.Fatalf("issued claims %+v", c)
	}
	got, err := s.Verify(tok)
	if err != nil || got != c {
		t.Fatalf("Verify = %+v, %v; want %+v", got, err, c)
	}
	// Another verifier with the same key takes it (gateways share the key).
	other := &Signer{Key: bytes.Clone(testKey), Now: s.Now}
	if _, err := other.Verify(tok); err != nil {
		t.Fatalf("same key, other signer: %v", err)
	}
	// Two tokens for one user differ (their IDs name them in logs).
	tok2, c2, _ := s.Issue("alice", "", time.Minute)
	if tok2 == tok || c2.ID == c.ID {
		t.Fatal("two tokens share an ID")
	}
}

func TestTokenExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := fixedSigner(&now)
	tok, _, err := s.Issue("alice", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Second)
	if _, err := s.Verify(tok); err != nil {
		t.Fatalf("within its lifetime: %v", err)
	}
	now = now.Add(time.Second)
	c, err := s.Verify(tok)
	if !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at its expiry: %v, want ErrTokenExpired", err)
	}
	if c.User != "alice" {
		t.Errorf("expired token's claims %+v: the log names its user", c)
	}
	now = now.Add(time.Hour)
	if _, err := s.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("an hour later: %v", err)
	}
}

func TestTokenRefusals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := fixedSigner(&now)
	good, c, err := s.Issue("alice", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := bytes.Repeat([]byte("o"), MinKeyLen)
	fromOther, _, err := (&Signer{Key: otherKey, Now: s.Now}).Issue("alice", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	// The claims changed to another user and re-encoded, signature kept.
	payload, sig, _ := strings.Cut(strings.TrimPrefix(good, "pg1."), ".")
	c2 := c
	c2.User = "bob"
	body, _ := json.Marshal(c2)
	tampered := "pg1." + base64.RawURLEncoding.EncodeToString(body) + "." + sig
	_ = payload

	// Signed with the key, but naming a user not in canonical form.
	upper := c
	upper.User = "Alice"
	body, _ = json.Marshal(upper)
	nonCanonical := signRaw(testKey, body)
	body, _ = json.Marshal(Claims{User: "al ice", Expires: c.Expires, ID: "x"})
	badName := signRaw(testKey, body)
	body, _ = json.Marshal(Claims{User: "", Expires: c.Expires, ID: "x"})
	noUser := signRaw(testKey, body)
	body, _ = json.Marshal(Claims{User: "alice", Expires: c.Expires})
	noID := signRaw(testKey, body)
	notJSON := signRaw(testKey, []byte("alice"))

	long := good + "." + strings.Repeat("A", maxToken)
	// A long token signed correctly is still refused: bounded work.
	body, _ = json.Marshal(Claims{User: "alice", Expires: c.Expires, ID: strings.Repeat("x", maxToken)})
	longSigned := signRaw(testKey, body)

	for name, tok := range map[string]string{
		"other key":         fromOther,
		"tampered claims":   tampered,
		"non-canonical":     nonCanonical,
		"invalid user":      badName,
		"no user":           noUser,
		"no id":             noID,
		"claims not JSON":   notJSON,
		"over-long":         long,
		"over-long, signed": longSigned,
		"empty":             "",
		"no prefix":         strings.TrimPrefix(good, "pg1."),
		"pg2":               "pg2." + strings.TrimPrefix(good, "pg1."),
		"no signature":      "pg1." + payload,
		"empty signature":   "pg1." + payload + ".",
		"signature cut":     good[:len(good)-2],
		"signature padded":  good + "=",
		"extra part":        good + ".x",
		"claims part only":  "pg1." + payload + "." + payload,
	} {
		got, err := s.Verify(tok)
		if !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: Verify = %+v, %v; want ErrTokenInvalid", name, got, err)
			continue
		}
		if got != (Claims{}) {
			t.Errorf("%s: refused token returned claims %+v", name, got)
		}
		if tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: error %q quotes the token", name, err)
		}
	}
	if _, err := s.Verify(good); err != nil {
		t.Fatalf("the good token: %v", err)
	}
}

func TestTokenErrorsNeverQuoteToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := fixedSigner(&now)
	tok, c, _ := s.Issue("alice", "", time.Minute)
	now = now.Add(time.Hour)
	_, err := s.Verify(tok)
	if err == nil {
		t.Fatal("expired token taken")
	}
	_, sig, _ := strings.Cut(strings.TrimPrefix(tok, "pg1."), ".")
	for _, part := range []string{tok, sig, c.ID} {
		if strings.Contains(err.Error(), part) {
			t.Fatalf("error %q quotes %q", err, part)
		}
	}
	_, err = s.Verify(tok + "x")
	if err == nil || strings.Contains(err.Error(), sig) {
		t.Fatalf("error %v quotes the signature", err)
	}
}

func TestIssueRefusals(t *testing.T) {
	s := &Signer{Key: testKey}
	for name, f := range map[string]func() error{
		"invalid user": func() error { _, _, err := s.Issue("al ice", "", time.Minute); return err },
		"empty user":   func() error { _, _, err := s.Issue("", "", time.Minute); return err },
		"zero ttl":     func() error { _, _, err := s.Issue("alice", "", 0); return err },
		"short key": func() error {
			_, _, err := (&Signer{Key: testKey[:MinKeyLen-1]}).Issue("alice", "", time.Minute)
			return err
		},
	} {
		if err := f(); err == nil {
			t.Errorf("%s: Issue succeeded", name)
		}
	}
	tok, _, _ := s.Issue("alice", "", time.Minute)
	if _, err := (&Signer{Key: testKey[:MinKeyLen-1]}).Verify(tok); err == nil {
		t.Error("a signer with a short key verified a token")
	}
}

// A token's signature has one spelling: a token that differs from the
// issued one in any byte is refused, even where base64 decoding would map
// it to the same MAC (line breaks, the final character's unused bits).
func TestTokenSignatureHasOneSpelling(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := fixedSigner(&now)
	tok, _, err := s.Issue("alice", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.LastIndexByte(tok, '.')
	last := tok[len(tok)-1]
	for _, ch := range []byte(alphabet) {
		if ch == last {
			continue
		}
		m := tok[:len(tok)-1] + string(ch)
		if _, err := s.Verify(m); err == nil {
			t.Errorf("token with its last character %q changed to %q verified", last, ch)
		}
	}
	for _, m := range []string{tok[:i+5] + "\n" + tok[i+5:], tok[:i+1] + "\r" + tok[i+1:], tok + "\n"} {
		if _, err := s.Verify(m); err == nil {
			t.Errorf("token with a line break in its signature (%q) verified", m[i:])
		}
	}
}
