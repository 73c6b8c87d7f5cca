package httpgw

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// AffinityCookie is the name of the gateway's own cookie. It names the
// node a browser was sent to and, once the hub has logged the browser in,
// its user, so that the hub's own pages (whose paths name no user) reach
// the node that holds the browser's login.
const AffinityCookie = "poolgate-node"

// affinityTTL is how long an affinity cookie is honoured; responses renew
// it once less than half remains.
const affinityTTL = 30 * 24 * time.Hour

// affinity is what the cookie says.
type affinity struct {
	Node    string
	User    string // "" until the hub logged the browser in
	Expires time.Time
}

// signer makes and checks affinity cookie values:
// base64url("1\x00node\x00user\x00expiry-unix") "." base64url(HMAC-SHA256[:16]).
type signer struct{ key []byte }

func (s signer) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(payload)
	return m.Sum(nil)[:16]
}

func (s signer) encode(a affinity) string {
	payload := []byte("1\x00" + a.Node + "\x00" + a.User + "\x00" + strconv.FormatInt(a.Expires.Unix(), 10))
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

var errBadAffinity = errors.New("affinity cookie is forged, damaged or expired")

// decode verifies a cookie value. A forged, damaged or expired value is
// an error; the caller then ignores the cookie.
func (s signer) decode(v string, now time.Time) (affinity, error) {
	p64, m64, ok := strings.Cut(v, ".")
	if !ok || len(p64) > 1024 {
		return affinity{}, errBadAffinity
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	mac, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac(payload)) {
		return affinity{}, errBadAffinity
	}
	f := strings.Split(string(payload), "\x00")
	if len(f) != 4 || f[0] != "1" {
		return affinity{}, errBadAffinity
	}
	exp, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || !now.Before(time.Unix(exp, 0)) {
		return affinity{}, errBadAffinity
	}
	return affinity{Node: f[1], User: f[2], Expires: time.Unix(exp, 0)}, nil
}

// loadAffinityKey reads the cookie signing key from dir, creating a random
// one (0600) on first start, so cookies stay valid across restarts.
func loadAffinityKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, "http_affinity.key")
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) < 32 {
			return nil, fmt.Errorf("%s: key is %d bytes, want 32; delete it to make a new one", path, len(key))
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, key, 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	return key, nil
}

var b64 = base64.RawURLEncoding
