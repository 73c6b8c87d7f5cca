package identity

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/poolgate/poolgate/internal/username"
)

// Identity is a user proven by the provider: what a verified ID token
// says, mapped to a login name.
type Identity struct {
	// User is the canonical login name (see package username).
	User string
	// Subject is the provider's subject (sub) of the user; with Issuer it
	// names the account for good, whatever its display names become.
	Subject string
	Issuer  string
	// ObjectID is Entra ID's oid: the user's ID across the tenant's
	// applications. Empty for other providers.
	ObjectID string
	Name     string
	Email    string
	// Groups are the token's groups claim (object IDs on Entra ID, or
	// names where the application is set to send names).
	Groups []string
	// GroupsOverage is true when the provider left the groups out for
	// being too many (Entra ID's _claim_names); Groups is then empty.
	GroupsOverage bool
	// Expiry is when the ID token expires. Bindings outlive it: the token
	// proves the sign-in, it is not kept.
	Expiry time.Time
}

// inGroups reports whether any of the identity's groups is in list,
// compared without regard to case (object IDs are GUIDs).
func (id *Identity) inGroups(list []string) bool {
	for _, g := range id.Groups {
		if slices.ContainsFunc(list, func(s string) bool { return strings.EqualFold(strings.TrimSpace(s), g) }) {
			return true
		}
	}
	return false
}

// CheckLogin reports whether login (a canonical name, as the front end
// holds it) is the signed-in user, failing with ErrWrongUser.
func (id *Identity) CheckLogin(login string) error {
	if login == id.User {
		return nil
	}
	return refuse(ErrWrongUser, nil, "signed in as %s, which is not the login name %s; log in as %s", id.User, quoteName(login), id.User)
}

// quoteName shows a login name the front end already checked, or a
// placeholder for anything else.
func quoteName(s string) string {
	if username.Valid(s) {
		return s
	}
	return "given"
}

// IsOps reports whether id may use the dashboard and admin API: a member
// of one of OpsGroups. Never true when OpsGroups is empty or when the
// provider left the groups out (overage).
func (c Config) IsOps(id *Identity) bool {
	return id != nil && len(c.OpsGroups) > 0 && id.inGroups(c.OpsGroups)
}

// claimSet is the part of an ID token's claims the mapping reads.
type claimSet struct {
	Subject    string            `json:"sub"`
	Issuer     string            `json:"iss"`
	ObjectID   string            `json:"oid"`
	Name       string            `json:"name"`
	Email      string            `json:"email"`
	Groups     stringList        `json:"groups"`
	ClaimNames map[string]string `json:"_claim_names"`
	HasGroups  flexBool          `json:"hasgroups"`
}

// stringList is a claim that is a list of strings or one string.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("groups claim is neither a string nor a list of strings")
	}
	*l = many
	return nil
}

// flexBool is a claim that is true or "true".
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case bool:
		*f = flexBool(v)
	case string:
		*f = flexBool(strings.EqualFold(v, "true"))
	}
	return nil
}

// mapClaims turns the claims of a verified ID token into an Identity, or
// refuses it: the username claim must map to a valid login name, and
// with allowed_groups set the user must be in one (an overage refuses,
// since membership cannot be told).
func (c Config) mapClaims(raw []byte) (*Identity, error) {
	var cs claimSet
	if err := json.Unmarshal(raw, &cs); err != nil {
		return nil, refuse(ErrInvalidToken, err, "the identity provider's token could not be read")
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, refuse(ErrInvalidToken, err, "the identity provider's token could not be read")
	}
	if cs.Subject == "" {
		return nil, refuse(ErrInvalidToken, nil, "the identity provider's token names no subject")
	}
	claim := c.OIDC.UsernameClaim
	if claim == "" {
		claim = DefaultUsernameClaim
	}
	shown := claim
	if !validClaimName(shown) {
		shown = "username claim"
	}
	var rawName string
	if v, ok := all[claim]; !ok || json.Unmarshal(v, &rawName) != nil || rawName == "" {
		return nil, refuse(ErrBadUsername, nil, "your account has no %s to use as a login name; ask ops to check identity.oidc.username_claim", shown)
	}
	user, err := c.OIDC.loginName(rawName)
	if err != nil {
		return nil, err
	}
	id := &Identity{
		User: user, Subject: cs.Subject, Issuer: cs.Issuer, ObjectID: cs.ObjectID,
		Name: cs.Name, Email: cs.Email, Groups: []string(cs.Groups),
	}
	if _, ok := cs.ClaimNames["groups"]; ok || bool(cs.HasGroups) {
		id.GroupsOverage, id.Groups = true, nil
	}
	if len(c.AllowedGroups) > 0 {
		if id.GroupsOverage {
			return id, refuse(ErrGroupOverage, nil, "your account is in too many groups for the sign-in token to list them; ask ops to have the application's group claims limited to the groups assigned to it")
		}
		if !id.inGroups(c.AllowedGroups) {
			return id, refuse(ErrNotAllowed, nil, "%s is not in a group allowed to use this pool", user)
		}
	}
	return id, nil
}

// loginName maps a username claim to a login name: the part before the
// last '@' (the domain must be one of UsernameDomains when they are
// set), canonical by package username.
func (o OIDCConfig) loginName(raw string) (string, error) {
	local, domain := raw, ""
	if i := strings.LastIndexByte(raw, '@'); i >= 0 {
		local, domain = raw[:i], raw[i+1:]
	}
	if len(o.UsernameDomains) > 0 && !slices.ContainsFunc(o.UsernameDomains, func(d string) bool { return strings.EqualFold(d, domain) }) {
		return "", refuse(ErrBadUsername, nil, "your account's domain is not one this pool accepts (identity.oidc.username_domains)")
	}
	user, err := username.Canonical(local)
	if err != nil {
		// username's errors quote one character at most, never the name.
		return "", refuse(ErrBadUsername, nil, "your account's name cannot be a login name here (%v)", err)
	}
	return user, nil
}
