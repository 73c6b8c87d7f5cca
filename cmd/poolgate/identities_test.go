package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/gateway/identity"
)

// TestCLIIdentities: ops list the keys that sign-ins bound, revoke a
// user's, and see a clear line on a gateway without an identity provider.
func TestCLIIdentities(t *testing.T) {
	b := balancer.New(balancer.Config{}, balancer.Options{})
	ids := identity.NewMemoryBindings(nil)
	now := time.Now()
	for _, k := range []identity.Binding{
		{User: "alice", Subject: "sub-a", Fingerprint: "SHA256:" + strings.Repeat("A", 43), KeyType: "ssh-ed25519", Client: "192.0.2.7:5000", Bound: now, Until: now.Add(12 * time.Hour)},
		{User: "alice", Subject: "sub-a", Fingerprint: "SHA256:" + strings.Repeat("B", 43), KeyType: "ecdsa-sha2-nistp256", Client: "192.0.2.8:5000", Bound: now, Until: now.Add(12 * time.Hour)},
		{User: "bob", Subject: "sub-b\x1b[31m", Fingerprint: "SHA256:" + strings.Repeat("C", 43), KeyType: "ssh-ed25519", Client: "192.0.2.9:5000", Bound: now, Until: now.Add(time.Hour)},
	} {
		if err := ids.Bind(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	api, err := admin.New(admin.Config{}, b, admin.Options{Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()

	code, out, errs := runCmd("identities", "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, "3 keys bound") || !regexpLine(out, `alice\s+SHA256:A+\s+ssh-ed25519`) || !regexpLine(out, `bob\s+SHA256:C+`) {
		t.Fatalf("identities: %d %q %q", code, out, errs)
	}
	if strings.ContainsRune(out, 0x1b) {
		t.Fatalf("identities wrote a control character it received:\n%q", out)
	}
	code, out, _ = runCmd("identities", "--user", "Alice", "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, "2 keys bound") || strings.Contains(out, "bob") {
		t.Fatalf("identities --user Alice: %d %q", code, out)
	}
	code, out, _ = runCmd("identities", "--json", "--admin", srv.URL)
	var js admin.IdentitiesJSON
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || len(js.Identities) != 3 || js.Identities[2].Subject != "sub-b\x1b[31m" {
		t.Fatalf("identities --json: %d %q", code, out)
	}

	code, out, errs = runCmd("identity", "revoke", "--admin", srv.URL, "alice")
	if code != 0 || !strings.Contains(out, "alice: 2 bound keys forgotten") {
		t.Fatalf("identity revoke alice: %d %q %q", code, out, errs)
	}
	left, _ := ids.List(context.Background())
	if len(left) != 1 || left[0].User != "bob" {
		t.Fatalf("after revoking alice the bindings are %+v", left)
	}
	if code, _, errs = runCmd("identity", "revoke", "--admin", srv.URL, "al\x1bice"); code != 1 || !strings.Contains(errs, "invalid user name") {
		t.Fatalf("revoke of a name no front end accepts: %d %q", code, errs)
	}
	if code, _, errs = runCmd("identity", "forget", "alice"); code != 2 || !strings.Contains(errs, "poolgate identity revoke USER") {
		t.Fatalf("identity with an unknown action: %d %q", code, errs)
	}

	// A gateway without identity: the command says so.
	plain, _ := apiServer(t, "")
	if code, _, errs = runCmd("identities", "--admin", plain); code != 1 || !strings.Contains(errs, "identity.oidc.issuer") {
		t.Fatalf("identities on a gateway without sign-in: %d %q", code, errs)
	}
}
