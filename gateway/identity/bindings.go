package identity

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Binding ties a public key to the identity that signed in while the
// client offered it, until Until: the key then logs that user in without
// a new sign-in.
type Binding struct {
	User        string    `json:"user"`
	Subject     string    `json:"subject"`
	Fingerprint string    `json:"fingerprint"` // ssh.FingerprintSHA256 form: SHA256:…
	KeyType     string    `json:"key_type"`
	Client      string    `json:"client"` // address the sign-in came from
	Bound       time.Time `json:"bound"`
	Until       time.Time `json:"until"`
}

// NewBinding binds key to id from now for ttl.
func NewBinding(id *Identity, key ssh.PublicKey, client string, now time.Time, ttl time.Duration) Binding {
	return Binding{
		User: id.User, Subject: id.Subject, Fingerprint: ssh.FingerprintSHA256(key), KeyType: key.Type(),
		Client: client, Bound: now, Until: now.Add(ttl),
	}
}

// Bindings stores key bindings. A binding is found by its key's
// fingerprint; one key is bound to one user at a time (binding it again
// replaces the older binding). Lookup never returns a binding past Until.
type Bindings interface {
	Bind(ctx context.Context, b Binding) error
	Lookup(ctx context.Context, fingerprint string) (Binding, bool, error)
	// List returns the live bindings, by user then time bound.
	List(ctx context.Context) ([]Binding, error)
	// Revoke removes every binding of user and returns how many.
	Revoke(ctx context.Context, user string) (int, error)
	// Forget removes the binding of one key if it is user's.
	Forget(ctx context.Context, user, fingerprint string) error
}

// validFingerprint reports whether fp has the form of
// ssh.FingerprintSHA256.
func validFingerprint(fp string) bool {
	b64, ok := strings.CutPrefix(fp, "SHA256:")
	if !ok {
		return false
	}
	raw, err := base64.RawStdEncoding.DecodeString(b64)
	return err == nil && len(raw) == sha256.Size
}

func sortBindings(bs []Binding) {
	slices.SortFunc(bs, func(a, b Binding) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		return a.Bound.Compare(b.Bound)
	})
}

// MemoryBindings keeps bindings in this process: for a single gateway.
// Expired bindings are dropped as they are met and by Bind.
type MemoryBindings struct {
	now func() time.Time

	mu    sync.Mutex         // protects byKey
	byKey map[string]Binding // by fingerprint
}

// NewMemoryBindings returns an empty store; now nil is time.Now.
func NewMemoryBindings(now func() time.Time) *MemoryBindings {
	if now == nil {
		now = time.Now
	}
	return &MemoryBindings{now: now, byKey: map[string]Binding{}}
}

// Bind stores b, replacing any binding of the same key.
func (m *MemoryBindings) Bind(_ context.Context, b Binding) error {
	if err := checkBinding(b); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for fp, old := range m.byKey {
		if !now.Before(old.Until) {
			delete(m.byKey, fp)
		}
	}
	if now.Before(b.Until) {
		m.byKey[b.Fingerprint] = b
	}
	return nil
}

// Lookup returns the live binding of the key with fingerprint.
func (m *MemoryBindings) Lookup(_ context.Context, fingerprint string) (Binding, bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.byKey[fingerprint]
	if ok && !now.Before(b.Until) {
		delete(m.byKey, fingerprint)
		return Binding{}, false, nil
	}
	return b, ok, nil
}

// List returns the live bindings.
func (m *MemoryBindings) List(context.Context) ([]Binding, error) {
	now := m.now()
	m.mu.Lock()
	var out []Binding
	for _, b := range m.byKey {
		if now.Before(b.Until) {
			out = append(out, b)
		}
	}
	m.mu.Unlock()
	sortBindings(out)
	return out, nil
}

// Revoke removes every binding of user.
func (m *MemoryBindings) Revoke(_ context.Context, user string) (int, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for fp, b := range m.byKey {
		if b.User == user {
			delete(m.byKey, fp)
			if now.Before(b.Until) {
				n++
			}
		}
	}
	return n, nil
}

// Forget removes the binding of fingerprint if it is user's.
func (m *MemoryBindings) Forget(_ context.Context, user, fingerprint string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.byKey[fingerprint]; ok && b.User == user {
		delete(m.byKey, fingerprint)
	}
	return nil
}

func checkBinding(b Binding) error {
	if b.User == "" || !validFingerprint(b.Fingerprint) || b.Until.IsZero() {
		return errBadBinding
	}
	return nil
}
