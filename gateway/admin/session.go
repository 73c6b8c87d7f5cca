package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// sessionTTL is how long a dashboard sign-in lasts.
const sessionTTL = 12 * time.Hour

// sessions makes and checks the dashboard's cookie: an opaque value
// "v1.<access>.<expiry-unix>.<HMAC-SHA256>" under a key made at start,
// so the cookie never carries the token and a restart signs everyone
// out.
type sessions struct {
	key []byte
	now func() time.Time
}

func newSessions(now func() time.Time) sessions {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("admin: no randomness for the session key: " + err.Error())
	}
	return sessions{key: key, now: now}
}

func (s sessions) mac(payload string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("poolgate admin session\x00" + payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// issue returns a cookie value for a at level, valid for sessionTTL.
func (s sessions) issue(a access) string {
	payload := "v1." + strconv.Itoa(int(a)) + "." + strconv.FormatInt(s.now().Add(sessionTTL).Unix(), 10)
	return payload + "." + s.mac(payload)
}

// check returns the access a cookie value grants: noAccess when it is
// forged, damaged or expired.
func (s sessions) check(v string) access {
	i := strings.LastIndexByte(v, '.')
	if i < 0 || len(v) > 200 {
		return noAccess
	}
	payload, mac := v[:i], v[i+1:]
	if !hmac.Equal([]byte(mac), []byte(s.mac(payload))) {
		return noAccess
	}
	f := strings.Split(payload, ".")
	if len(f) != 3 || f[0] != "v1" {
		return noAccess
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || !s.now().Before(time.Unix(exp, 0)) {
		return noAccess
	}
	switch a, _ := strconv.Atoi(f[1]); access(a) {
	case readAccess:
		return readAccess
	case writeAccess:
		return writeAccess
	}
	return noAccess
}
