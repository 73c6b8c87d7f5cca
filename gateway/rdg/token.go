package rdg

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/poolgate/poolgate/internal/username"
)

// A token is what poolgate gives one user to pass its RD Gateway: the
// .rdp file's gatewayaccesstoken, sent back by the client in its tunnel
// create packet (the PAA cookie). It is
//
//	pg1.<claims, base64url JSON>.<HMAC-SHA256 of "pg1."+claims, base64url>
//
// signed with a key the gateways that share state share (the app keeps it
// in Redis, or state_dir alone). It names the user, optionally the node,
// and expires within minutes; it is a bearer secret, so it is never
// logged: logs name its ID.

const tokenPrefix = "pg1."

// Claims are what a token says.
type Claims struct {
	User string `json:"u"`
	// Node, when set, is the node the token opens (poolgate rdp-file
	// --node); else the user's node by the routing rules.
	Node    string `json:"n,omitempty"`
	Issued  int64  `json:"iat"`
	Expires int64  `json:"exp"`
	// ID names the token in logs.
	ID string `json:"jti"`
}

// Errors of Verify.
var (
	ErrTokenInvalid = errors.New("the gateway access token is not one this pool issued")
	ErrTokenExpired = errors.New("the gateway access token has expired")
)

// Signer issues and verifies tokens.
type Signer struct {
	Key []byte
	Now func() time.Time // nil: time.Now
}

// MinKeyLen is the shortest key a Signer takes.
const MinKeyLen = 32

func (s *Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Issue signs a token for user (and node, if not "") valid for ttl.
func (s *Signer) Issue(user, node string, ttl time.Duration) (string, Claims, error) {
	if len(s.Key) < MinKeyLen {
		return "", Claims{}, errors.New("rdg: token key too short")
	}
	u, err := username.Canonical(user)
	if err != nil {
		return "", Claims{}, fmt.Errorf("user %q: %w", user, err)
	}
	if ttl <= 0 {
		return "", Claims{}, errors.New("rdg: token lifetime must be positive")
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Claims{}, err
	}
	now := s.now()
	c := Claims{User: u, Node: node, Issued: now.Unix(), Expires: now.Add(ttl).Unix(), ID: hex.EncodeToString(id[:])}
	body, err := json.Marshal(c)
	if err != nil {
		return "", Claims{}, err
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	return tokenPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload)), c, nil
}

func (s *Signer) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.Key)
	m.Write([]byte(tokenPrefix + payload))
	return m.Sum(nil)
}

// maxToken bounds a token's length before any work is done on it.
const maxToken = 2048

// Verify checks a token's signature and expiry and returns its claims.
// Its errors say what is wrong without quoting the token.
func (s *Signer) Verify(token string) (Claims, error) {
	if len(s.Key) < MinKeyLen {
		return Claims{}, errors.New("rdg: token key too short")
	}
	if len(token) > maxToken || !strings.HasPrefix(token, tokenPrefix) {
		return Claims{}, ErrTokenInvalid
	}
	payload, sig, ok := strings.Cut(strings.TrimPrefix(token, tokenPrefix), ".")
	if !ok {
		return Claims{}, ErrTokenInvalid
	}
	// The signature's one spelling: decoding would skip line breaks and
	// ignore the last character's spare bits.
	if !hmac.Equal([]byte(sig), []byte(base64.RawURLEncoding.EncodeToString(s.mac(payload)))) {
		return Claims{}, ErrTokenInvalid
	}
	body, err := base64.RawURLEncoding.Strict().DecodeString(payload)
	if err != nil {
		return Claims{}, ErrTokenInvalid
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil || c.User == "" || c.ID == "" {
		return Claims{}, ErrTokenInvalid
	}
	if u, err := username.Canonical(c.User); err != nil || u != c.User {
		return Claims{}, ErrTokenInvalid
	}
	if !s.now().Before(time.Unix(c.Expires, 0)) {
		return c, ErrTokenExpired
	}
	return c, nil
}
