package httpgw

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/poolgate/poolgate/internal/atomicfile"
	"github.com/poolgate/poolgate/internal/username"
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
// It keeps keyed HMAC states for reuse: setting one up costs more than
// signing a cookie, and every routed request checks or signs one.
type signer struct {
	key  []byte
	macs *sync.Pool
}

func newSigner(key []byte) signer {
	return signer{key: key, macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

func (s signer) mac(payload []byte) []byte {
	m := s.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(payload)
	sum := m.Sum(make([]byte, 0, sha256.Size))[:16]
	s.macs.Put(m)
	return sum
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
	user := f[2]
	if !username.Valid(user) {
		// Signed by a gateway of an older rule (a name that is not valid
		// now): the node still holds, the name is not used.
		user = ""
	}
	return affinity{Node: f[1], User: user, Expires: time.Unix(exp, 0)}, nil
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
	if err := atomicfile.Write(path, key, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

var b64 = base64.RawURLEncoding

// cookieCache remembers the affinity cookies this gateway issued, so that
// the common requests neither sign a new value nor verify a known one: a
// (node, user) pair reuses its Set-Cookie line for up to an hour (the
// cookie then still has over 29 of its 30 days), and a value it issued
// decodes without an HMAC. It forgets everything past 50,000 entries.
type cookieCache struct {
	sign   signer
	secure bool

	mu     sync.Mutex
	byPair map[string]issued // node \x00 user → what was issued
	byVal  map[string]affinity
}

type issued struct {
	header string
	made   time.Time
}

const (
	cookieReuse    = time.Hour
	cookieCacheMax = 50000
)

func newCookieCache(s signer, secure bool) *cookieCache {
	return &cookieCache{sign: s, secure: secure, byPair: map[string]issued{}, byVal: map[string]affinity{}}
}

// header returns a Set-Cookie value naming node and user.
func (c *cookieCache) header(node, user string, now time.Time) string {
	key := node + "\x00" + user
	c.mu.Lock()
	defer c.mu.Unlock()
	if is, ok := c.byPair[key]; ok && now.Sub(is.made) < cookieReuse && !now.Before(is.made) {
		return is.header
	}
	if len(c.byPair) >= cookieCacheMax || len(c.byVal) >= cookieCacheMax {
		c.byPair, c.byVal = map[string]issued{}, map[string]affinity{}
	}
	a := affinity{Node: node, User: user, Expires: now.Add(affinityTTL)}
	v := c.sign.encode(a)
	ck := &http.Cookie{Name: AffinityCookie, Value: v, Path: "/", MaxAge: int(affinityTTL / time.Second),
		HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteLaxMode}
	h := ck.String()
	c.byPair[key] = issued{header: h, made: now}
	c.byVal[v] = affinity{Node: node, User: user, Expires: time.Unix(a.Expires.Unix(), 0)}
	return h
}

// decode is signer.decode, skipping the HMAC for values issued here.
func (c *cookieCache) decode(v string, now time.Time) (affinity, error) {
	c.mu.Lock()
	a, ok := c.byVal[v]
	c.mu.Unlock()
	if ok {
		if !now.Before(a.Expires) {
			return affinity{}, errBadAffinity
		}
		return a, nil
	}
	return c.sign.decode(v, now)
}
