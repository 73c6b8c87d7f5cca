package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/gateway/keyvault"
	"github.com/poolgate/poolgate/gateway/keyvault/keyvaulttest"
)

// TestKeyVaultCA: with the user CA in Azure Key Vault (the SDK's fake, in
// the test process, holding a real P-256 key), a real sshd whose
// TrustedUserCAKeys holds only what `poolgate ca-pubkey` prints for the
// gateway's config accepts alice's login through the gateway with the real
// ssh client; her next login reuses its certificate. While Key Vault
// throttles (429) or fails (503), a user who needs a signature gets a
// poolgate: line and exit 255; once it answers again, she logs in.
func TestKeyVaultCA(t *testing.T) {
	v := keyvaulttest.New()
	v.AddKey("poolgate-user-ca", keyvaulttest.P256(t))
	vault := app.WithKeyVault(keyvault.Options{Credential: keyvaulttest.Credential(), Transport: v.Transport()})
	var cfg app.Config
	p := newPool(t, poolOptions{
		nodes:   1,
		appOpts: []app.Option{vault},
		cfg: func(c *app.Config) {
			c.CA.KeyVault = &app.KeyVaultCA{URL: v.URL, Key: "poolgate-user-ca"}
			cfg = *c
		},
	})

	// What ca-pubkey prints for this config becomes the node's only
	// trusted CA (sshd reads TrustedUserCAKeys at each login).
	lines, err := app.CALines(cfg, vault)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "ecdsa-sha2-nistp256 ") || lines[0] != p.gw.CALine() {
		t.Fatalf("ca-pubkey printed %q; the gateway signs with %q", lines, p.gw.CALine())
	}
	if err := os.WriteFile(filepath.Join(p.dir, "user_ca.pub"), []byte(lines[0]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out, errs, code := p.sshCmd("alice", `echo "$DSVM_NODE"`)
	if code != 0 || strings.TrimSpace(out) != "node-1" {
		t.Fatalf("alice through the Key Vault CA: exit %d, out %q, stderr %q", code, out, tail(errs))
	}
	signs := v.Calls(keyvaulttest.Sign)
	if signs != 1 {
		t.Errorf("%d Key Vault signatures for one login, want 1", signs)
	}

	// alice's next login reuses her node-login certificate (issue 25: one
	// user cannot spend the vault's budget by looping logins).
	if _, errs, code := p.sshCmd("alice", "true"); code != 0 || v.Calls(keyvaulttest.Sign) != signs {
		t.Errorf("alice's second login: exit %d (%s), %d signatures in all; want 0 and still %d", code, tail(errs), v.Calls(keyvaulttest.Sign), signs)
	}

	// A login that needs a signature while the vault fails: users who
	// have no certificate yet.
	for _, tc := range []struct {
		name, user string
		status     int
		after      time.Duration
	}{
		{"throttled", "bob", http.StatusTooManyRequests, 10 * time.Second}, // Retry-After past the budget
		{"down", "carol", http.StatusServiceUnavailable, 0},                // for longer than the budget
	} {
		t.Run(tc.name, func(t *testing.T) {
			v.Fail(keyvaulttest.Sign, tc.status, tc.after, -1)
			start := time.Now()
			_, errs, code := p.sshCmd(tc.user, "true")
			took := time.Since(start)
			want := "poolgate: the gateway could not sign your login"
			if code != 255 || !strings.Contains(errs, want) {
				t.Errorf("Key Vault %d: exit %d, stderr %q; want 255 and %q", tc.status, code, tail(errs), want)
			}
			t.Logf("refused after %s", took.Round(time.Millisecond))
			if n := p.sessionsOf(tc.user); n != 0 {
				t.Errorf("the refused login left %d sessions", n)
			}

			v.Recover()
			out, errs, code := p.sshCmd(tc.user, `echo "$DSVM_NODE"`)
			if code != 0 || strings.TrimSpace(out) != "node-1" {
				t.Errorf("after Key Vault recovered: exit %d, out %q, stderr %q", code, out, tail(errs))
			}
		})
	}
}
