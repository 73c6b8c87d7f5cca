package sshgw

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/gateway/keyvault"
)

// Every node-leg certificate costs a signature by the user CA; with the
// CA in Key Vault that is a round trip against the vault's throttling
// budget, which all users share. certIssuer bounds what one user can
// spend: a certificate (and its ephemeral key) is reused for the same
// certificate contents while more than half its validity is left, and
// the signatures a user causes are limited per minute.

// DefaultSignaturesPerUserPerMinute is ssh.signatures_per_user_per_minute's
// default.
const DefaultSignaturesPerUserPerMinute = 30

// maxCachedCerts bounds the certificate cache; maxBuckets the per-user
// rate state. Both are swept of what no longer matters when full.
const (
	maxCachedCerts = 4096
	maxBuckets     = 16384
)

// errSignLimit marks a login refused because its user caused too many
// signatures in the last minute.
var errSignLimit = errors.New("too many certificate signatures for this user")

const msgSignLimit = "poolgate: too many logins for %s in the last minute (the gateway signs at most %d node logins a minute per user); please wait a minute and try again.\n"

// certKey is everything that goes into a certificate besides its key,
// serial and validity: the CA, the principal, the key ID and the
// permissions (critical options and extensions) in a canonical form. A
// restricted login therefore never reuses an unrestricted certificate.
type certKey struct {
	ca, user, keyID, perms string
}

// certEntry is a cached certificate, or one being signed. signer holds
// the ephemeral private key: it is never logged.
type certEntry struct {
	ready       chan struct{} // closed once signer or err is set
	signer      ssh.Signer
	err         error
	validBefore time.Time
	issued      time.Time
}

// bucket is one user's signature allowance.
type bucket struct {
	tokens float64
	at     time.Time
}

// certIssuer signs and reuses node-leg certificates.
type certIssuer struct {
	ca        ssh.Signer
	now       func() time.Time
	perMinute int // signatures per user per minute; <= 0: no limit
	metrics   *Metrics

	mu      sync.Mutex // protects certs and buckets
	certs   map[certKey]*certEntry
	buckets map[string]*bucket
}

func newCertIssuer(ca ssh.Signer, perMinute int, now func() time.Time, m *Metrics) *certIssuer {
	return &certIssuer{
		ca: ca, now: now, perMinute: perMinute, metrics: m,
		certs: map[certKey]*certEntry{}, buckets: map[string]*bucket{},
	}
}

// permsKey encodes p canonically (sorted names; lengths keep values
// apart).
func permsKey(p ssh.Permissions) string {
	var b strings.Builder
	for _, m := range []map[string]string{p.CriticalOptions, p.Extensions} {
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			fmt.Fprintf(&b, "%d:%s%d:%s", len(k), k, len(m[k]), m[k])
		}
		b.WriteByte('|')
	}
	return b.String()
}

// issue returns a signer with a certificate for user carrying keyID and
// r's permissions: a cached one while more than half of CertValidity is
// left, else a fresh one, if user has signatures left this minute.
// Logins that ask while the same certificate is being signed wait for
// it (and share its failure) rather than sign again.
func (ci *certIssuer) issue(user, keyID string, r restrictions) (ssh.Signer, error) {
	k := certKey{ca: string(ci.ca.PublicKey().Marshal()), user: user, keyID: keyID, perms: permsKey(r.certPermissions())}
	now := ci.now()
	ci.mu.Lock()
	if e := ci.certs[k]; e != nil {
		select {
		case <-e.ready:
			if e.err == nil && e.validBefore.Sub(now) > CertValidity/2 && !now.Before(e.issued) {
				ci.mu.Unlock()
				ci.metrics.signatureReused()
				return e.signer, nil
			}
		default: // being signed
			ci.mu.Unlock()
			<-e.ready
			if e.err != nil {
				return nil, e.err
			}
			ci.metrics.signatureReused()
			return e.signer, nil
		}
	}
	if !ci.take(user, now) {
		ci.mu.Unlock()
		return nil, &ssh.BannerError{
			Err:     fmt.Errorf("%w (%d a minute)", errSignLimit, ci.perMinute),
			Message: fmt.Sprintf(msgSignLimit, safeUser(user), ci.perMinute),
		}
	}
	if len(ci.certs) >= maxCachedCerts {
		ci.sweepCerts(now)
	}
	e := &certEntry{ready: make(chan struct{}), validBefore: now.Add(CertValidity), issued: now}
	ci.certs[k] = e
	ci.mu.Unlock()

	signer, err := signUserCert(ci.ca, user, keyID, r, now)
	ci.metrics.signed(err)
	ci.mu.Lock()
	e.signer, e.err = signer, err
	if err != nil && ci.certs[k] == e {
		delete(ci.certs, k)
	}
	ci.mu.Unlock()
	close(e.ready)
	return signer, err
}

// take spends one of user's signatures; false when none is left. The
// bucket holds perMinute and refills perMinute a minute. Called with mu
// held.
func (ci *certIssuer) take(user string, now time.Time) bool {
	if ci.perMinute <= 0 {
		return true
	}
	max := float64(ci.perMinute)
	b := ci.buckets[user]
	if b == nil {
		if len(ci.buckets) >= maxBuckets {
			ci.sweepBuckets(now)
		}
		b = &bucket{tokens: max, at: now}
		ci.buckets[user] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(max, b.tokens+d.Minutes()*max)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweepCerts drops certificates that would not be reused; if none, the
// oldest, so the cache stays bounded. Called with mu held.
func (ci *certIssuer) sweepCerts(now time.Time) {
	var oldest certKey
	var oldestAt time.Time
	for k, e := range ci.certs {
		if e.validBefore.Sub(now) <= CertValidity/2 {
			delete(ci.certs, k)
			continue
		}
		if oldestAt.IsZero() || e.issued.Before(oldestAt) {
			oldest, oldestAt = k, e.issued
		}
	}
	if len(ci.certs) >= maxCachedCerts {
		delete(ci.certs, oldest)
	}
}

// sweepBuckets drops users whose bucket has refilled (they are as new);
// if none, an arbitrary one, so the map stays bounded. Called with mu
// held.
func (ci *certIssuer) sweepBuckets(now time.Time) {
	for u, b := range ci.buckets {
		if now.Sub(b.at) >= time.Minute {
			delete(ci.buckets, u)
		}
	}
	for u := range ci.buckets {
		if len(ci.buckets) < maxBuckets {
			break
		}
		delete(ci.buckets, u)
	}
}

// signResult classifies a signature for poolgate_ca_signatures_total.
func signResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, keyvault.ErrThrottled):
		return "throttled"
	}
	return "error"
}
