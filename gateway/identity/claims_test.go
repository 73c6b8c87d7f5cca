package identity

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func claimsJSON(t *testing.T, extra map[string]any) []byte {
	t.Helper()
	c := map[string]any{"sub": "sub-1", "iss": "https://issuer.example", "preferred_username": "Alice@contoso.com",
		"groups": []string{"AAAAAAAA-0000-1111-2222-BBBBBBBBBBBB", "pool-users"}}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMapClaims(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     Config
		extra   map[string]any
		user    string
		err     error
		msg     string // UserMessage, when err
		overage bool
	}{
		{name: "domain dropped, lower case", user: "alice"},
		{name: "no domain", extra: map[string]any{"preferred_username": "bob"}, user: "bob"},
		{name: "other claim", cfg: Config{OIDC: OIDCConfig{UsernameClaim: "upn"}}, extra: map[string]any{"upn": "carol@contoso.com"}, user: "carol"},
		{name: "claim missing", extra: map[string]any{"preferred_username": nil}, err: ErrBadUsername,
			msg: "poolgate: your account has no preferred_username to use as a login name; ask ops to check identity.oidc.username_claim"},
		{name: "claim not a string", extra: map[string]any{"preferred_username": 7}, err: ErrBadUsername},
		{name: "Entra guest", extra: map[string]any{"preferred_username": "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com"}, err: ErrBadUsername,
			msg: "poolgate: your account's name cannot be a login name here (invalid user name: character '#' at position 19 is not allowed; only ASCII letters, digits and _ . @ - may appear)"},
		{name: "leading dash", extra: map[string]any{"preferred_username": "-oProxyCommand@contoso.com"}, err: ErrBadUsername},
		{name: "domain accepted", cfg: Config{OIDC: OIDCConfig{UsernameDomains: []string{"Contoso.com"}}}, user: "alice"},
		{name: "domain refused", cfg: Config{OIDC: OIDCConfig{UsernameDomains: []string{"contoso.com"}}}, extra: map[string]any{"preferred_username": "alice@fabrikam.com"}, err: ErrBadUsername,
			msg: "poolgate: your account's domain is not one this pool accepts (identity.oidc.username_domains)"},
		{name: "no domain with domains set", cfg: Config{OIDC: OIDCConfig{UsernameDomains: []string{"contoso.com"}}}, extra: map[string]any{"preferred_username": "alice"}, err: ErrBadUsername},
		{name: "no subject", extra: map[string]any{"sub": nil}, err: ErrInvalidToken},
		{name: "allowed by object ID", cfg: Config{AllowedGroups: []string{"aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb"}}, user: "alice"},
		{name: "allowed by name", cfg: Config{AllowedGroups: []string{"Pool-Users"}}, user: "alice"},
		{name: "one group as a string", cfg: Config{AllowedGroups: []string{"pool-users"}}, extra: map[string]any{"groups": "pool-users"}, user: "alice"},
		{name: "not allowed", cfg: Config{AllowedGroups: []string{"gpu-users"}}, err: ErrNotAllowed,
			msg: "poolgate: alice is not in a group allowed to use this pool"},
		{name: "no groups claim", cfg: Config{AllowedGroups: []string{"gpu-users"}}, extra: map[string]any{"groups": nil}, err: ErrNotAllowed},
		{name: "overage refused", cfg: Config{AllowedGroups: []string{"pool-users"}},
			extra: map[string]any{"groups": nil, "_claim_names": map[string]string{"groups": "src1"},
				"_claim_sources": map[string]any{"src1": map[string]string{"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}},
			err: ErrGroupOverage, msg: "poolgate: your account is in too many groups for the sign-in token to list them; ask ops to have the application's group claims limited to the groups assigned to it"},
		{name: "hasgroups refused", cfg: Config{AllowedGroups: []string{"pool-users"}}, extra: map[string]any{"groups": nil, "hasgroups": "true"}, err: ErrGroupOverage},
		{name: "overage without allowed_groups", extra: map[string]any{"groups": nil, "hasgroups": true}, user: "alice", overage: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.cfg.mapClaims(claimsJSON(t, tt.extra))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("mapClaims = %+v, %v; want %v", id, err, tt.err)
				}
				if tt.msg != "" && UserMessage(err) != tt.msg {
					t.Errorf("UserMessage = %q\n want %q", UserMessage(err), tt.msg)
				}
				return
			}
			if err != nil || id.User != tt.user || id.Subject != "sub-1" || id.GroupsOverage != tt.overage {
				t.Fatalf("mapClaims = %+v, %v; want user %q", id, err, tt.user)
			}
		})
	}
}

func TestCheckLoginAndIsOps(t *testing.T) {
	id := &Identity{User: "alice", Groups: []string{"ops-team"}}
	if err := id.CheckLogin("alice"); err != nil {
		t.Errorf("CheckLogin(alice) = %v", err)
	}
	err := id.CheckLogin("bob")
	if !errors.Is(err, ErrWrongUser) {
		t.Fatalf("CheckLogin(bob) = %v", err)
	}
	if got, want := UserMessage(err), "poolgate: signed in as alice, which is not the login name bob; log in as alice"; got != want {
		t.Errorf("UserMessage = %q, want %q", got, want)
	}
	if got := UserMessage(id.CheckLogin("\x1b[2Jbob")); strings.Contains(got, "\x1b") {
		t.Errorf("a raw login name reached the message: %q", got)
	}
	for _, tt := range []struct {
		cfg  Config
		id   *Identity
		want bool
	}{
		{Config{OpsGroups: []string{"OPS-team"}}, id, true},
		{Config{OpsGroups: []string{"other"}}, id, false},
		{Config{}, id, false},
		{Config{OpsGroups: []string{"ops-team"}}, &Identity{User: "alice", GroupsOverage: true}, false},
		{Config{OpsGroups: []string{"ops-team"}}, nil, false},
	} {
		if got := tt.cfg.IsOps(tt.id); got != tt.want {
			t.Errorf("IsOps(%+v) with ops_groups %v = %v", tt.id, tt.cfg.OpsGroups, got)
		}
	}
	if got := UserMessage(errors.New("boom")); got != "poolgate: sign-in failed; try again later, or log in with a key the gateway knows" {
		t.Errorf("UserMessage of a foreign error = %q", got)
	}
}
