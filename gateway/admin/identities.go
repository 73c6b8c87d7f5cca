package admin

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/gateway/identity"
)

// Identities is what the API needs of the identity provider's key
// bindings (identity.Bindings).
type Identities interface {
	// List returns the live bindings, by user then time bound.
	List(ctx context.Context) ([]identity.Binding, error)
	// Revoke removes every binding of user and returns how many.
	Revoke(ctx context.Context, user string) (int, error)
}

// BindingJSON is one key bound to a user by a sign-in, in
// GET /api/identities.
type BindingJSON struct {
	User        string    `json:"user"`
	Subject     string    `json:"subject"` // the provider's subject of the sign-in
	Fingerprint string    `json:"fingerprint"`
	KeyType     string    `json:"key_type"`
	Client      string    `json:"client"` // address the sign-in came from
	Bound       time.Time `json:"bound"`
	Until       time.Time `json:"until"`
}

// IdentitiesJSON is the answer of GET /api/identities.
type IdentitiesJSON struct {
	Identities []BindingJSON `json:"identities"`
}

// RevokedJSON is the answer of DELETE /api/identities/{user}.
type RevokedJSON struct {
	User    string `json:"user"`
	Revoked int    `json:"revoked"` // keys that were bound
}

const msgNoIdentity = "sign-in with an identity provider is not configured on this gateway (identity.oidc.issuer)"

func (s *Server) identities(w http.ResponseWriter, r *http.Request) {
	if s.ids == nil {
		writeError(w, http.StatusNotImplemented, msgNoIdentity)
		return
	}
	list, err := s.ids.List(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "could not read the key bindings: "+err.Error())
		return
	}
	out := IdentitiesJSON{Identities: []BindingJSON{}}
	for _, b := range list {
		out.Identities = append(out.Identities, BindingJSON{
			User: b.User, Subject: b.Subject, Fingerprint: b.Fingerprint, KeyType: b.KeyType,
			Client: b.Client, Bound: b.Bound.UTC(), Until: b.Until.UTC(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// revokeIdentity forgets every key bound to a user: their next
// connection signs in again. Sessions open now go on.
func (s *Server) revokeIdentity(w http.ResponseWriter, r *http.Request) {
	user, ok := userParam(w, r.PathValue("user"))
	if !ok {
		return
	}
	if s.ids == nil {
		writeError(w, http.StatusNotImplemented, msgNoIdentity)
		return
	}
	n, err := s.ids.Revoke(r.Context(), user)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "could not revoke: "+err.Error())
		return
	}
	s.log.Info("key bindings revoked through the admin API", zap.String("user", user), zap.Int("keys", n), zap.String("client", r.RemoteAddr))
	writeJSON(w, http.StatusOK, RevokedJSON{User: user, Revoked: n})
}
