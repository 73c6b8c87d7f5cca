package app

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/keyvault"
	"github.com/poolgate/poolgate/gateway/keyvault/keyvaulttest"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

func TestKeyVaultConfigValidation(t *testing.T) {
	kv := func(body string) string { return minimal + "ca:\n  key_vault:\n" + body }
	for _, tt := range []struct{ doc, want string }{
		{kv("    url: https://pool-kv.vault.azure.net/\n"), "p.yaml:5: ca.key_vault.key: required"},
		{kv("    key: poolgate-user-ca\n"), "p.yaml:5: ca.key_vault.url: required"},
		{kv("    url: http://pool-kv.vault.azure.net/\n    key: k\n"), "ca.key_vault.url: \"http://pool-kv.vault.azure.net/\" is not a vault URL"},
		{kv("    url: https://pool-kv.vault.azure.net/keys/k\n    key: k\n"), "ca.key_vault.url: "},
		{kv("    url: https://pool-kv.vault.azure.net/\n    key: my_key\n"), "ca.key_vault.key: \"my_key\" is not a Key Vault key name"},
		{kv("    url: https://pool-kv.vault.azure.net/\n    key: k\n    version: a/b\n"), "ca.key_vault.version: "},
		{kv("    url: https://pool-kv.vault.azure.net/\n    key: k\n    previous: https://other-kv.vault.azure.net/keys/k/1\n"), "ca.key_vault.previous: "},
		{kv("    url: https://pool-kv.vault.azure.net/\n    key: k\n    previous: k\n"), "ca.key_vault.previous: \"k\" is the current key"},
		{kv("    url: https://pool-kv.vault.azure.net/\n    key: k\n    client_id: x\n"), "p.yaml:8: ca.key_vault.client_id: unknown key (known here: key, previous, url, version)"},
	} {
		_, err := ParseConfig("p.yaml", []byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s\n  error %v, want %q", tt.doc, err, tt.want)
		}
	}
	// The keys the deploy writes are accepted.
	cfg, err := ParseConfig("p.yaml", []byte(kv("    url: https://pool-kv.vault.azure.net/\n    key: poolgate-user-ca\n    version: 0123456789abcdef0123456789abcdef\n    previous: fedcba9876543210fedcba9876543210\n")))
	if err != nil {
		t.Fatal(err)
	}
	if k := cfg.CA.KeyVault; k == nil || k.Key != "poolgate-user-ca" || k.Version != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("ca.key_vault = %+v", cfg.CA.KeyVault)
	}
}

func TestKeyVaultPreviousForms(t *testing.T) {
	k := KeyVaultCA{URL: "https://pool-kv.vault.azure.net/", Key: "ca"}
	for _, tt := range []struct{ in, name, version string }{
		{"", "", ""},
		{"0123456789abcdef0123456789abcdef", "ca", "0123456789abcdef0123456789abcdef"},
		{"old-ca", "old-ca", ""},
		{"old-ca/v1", "old-ca", "v1"},
		{"https://pool-kv.vault.azure.net/keys/ca/v0", "ca", "v0"},
	} {
		k.Previous = tt.in
		name, version, err := k.previous()
		if err != nil || name != tt.name || version != tt.version {
			t.Errorf("previous %q = %q %q %v, want %q %q", tt.in, name, version, err, tt.name, tt.version)
		}
	}
}

// kvConfig is a gateway config with the CA in the fake vault.
func kvConfig(t *testing.T, v *keyvaulttest.Vault) Config {
	cfg := Config{StateDir: filepath.Join(t.TempDir(), "state")}
	cfg.SSH.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "node-1", SSH: "127.0.0.1:1"}}
	cfg.CA.KeyVault = &KeyVaultCA{URL: v.URL, Key: "poolgate-user-ca"}
	return cfg
}

func fakeVault(v *keyvaulttest.Vault) Option {
	return WithKeyVault(keyvault.Options{Credential: keyvaulttest.Credential(), Transport: v.Transport()})
}

func authorizedLine(t *testing.T, pub any, comment string) string {
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " " + comment
}

func TestKeyVaultCAInTheGateway(t *testing.T) {
	v := keyvaulttest.New()
	priv := keyvaulttest.P256(t)
	v.AddKey("poolgate-user-ca", priv)
	cfg := kvConfig(t, v)
	g, err := New(cfg, nil, fakeVault(v))
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeBuilt()
	want := authorizedLine(t, priv.Public(), "poolgate-user-ca")
	if got := g.CALine(); got != want || !strings.HasPrefix(got, "ecdsa-sha2-nistp256 ") {
		t.Errorf("CA line %q, want the vault key's %q", got, want)
	}
	// The CA signs through the vault, and no CA key file was made.
	if _, err := g.keys.CA.Sign(nil, []byte("x")); err != nil || v.Calls(keyvaulttest.Sign) != 1 {
		t.Errorf("signing: %v, %d sign calls", err, v.Calls(keyvaulttest.Sign))
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, sshgw.UserCAFile)); !os.IsNotExist(err) {
		t.Errorf("a CA key file exists in state_dir with the CA in Key Vault: %v", err)
	}
}

func TestKeyVaultThrottlingInMetrics(t *testing.T) {
	v := keyvaulttest.New()
	v.AddKey("poolgate-user-ca", keyvaulttest.P256(t))
	g, err := New(kvConfig(t, v), nil, fakeVault(v))
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeBuilt()
	// Two 429s that a retry gets past still show.
	v.Fail(keyvaulttest.Sign, http.StatusTooManyRequests, 10*time.Millisecond, 2)
	if _, err := g.keys.CA.Sign(nil, []byte("x")); err != nil {
		t.Fatalf("signing after two 429s: %v", err)
	}
	if n, err := testutil.GatherAndCount(g.reg, "poolgate_keyvault_throttled_total"); err != nil || n != 1 {
		t.Fatalf("poolgate_keyvault_throttled_total: %d series, %v", n, err)
	}
	if err := testutil.GatherAndCompare(g.reg, strings.NewReader(`
# HELP poolgate_keyvault_throttled_total 429 answers from the Key Vault that holds the user CA, retried or not: its throttling budget, shared by all logins, is running out.
# TYPE poolgate_keyvault_throttled_total counter
poolgate_keyvault_throttled_total 2
`), "poolgate_keyvault_throttled_total"); err != nil {
		t.Error(err)
	}
}

func TestKeyVaultCALinesWithPrevious(t *testing.T) {
	v := keyvaulttest.New()
	old := keyvaulttest.P256(t)
	oldVer := v.AddKey("poolgate-user-ca", old)
	cur := keyvaulttest.RSA(t, 3072)
	v.AddKey("poolgate-user-ca", cur)
	cfg := kvConfig(t, v)
	cfg.CA.KeyVault.Previous = oldVer
	lines, err := CALines(cfg, fakeVault(v))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{authorizedLine(t, cur.Public(), "poolgate-user-ca"), authorizedLine(t, old.Public(), "poolgate-user-ca-previous")}
	if len(lines) != 2 || lines[0] != want[0] || lines[1] != want[1] {
		t.Errorf("ca-pubkey lines\n%q\nwant\n%q", lines, want)
	}
	// The file CA: one line, the key created in state_dir.
	file := Config{StateDir: filepath.Join(t.TempDir(), "state")}
	lines, err = CALines(file)
	if err != nil || len(lines) != 1 || !strings.HasPrefix(lines[0], "ssh-ed25519 ") {
		t.Fatalf("file CA lines %q %v", lines, err)
	}
	data, err := os.ReadFile(filepath.Join(file.StateDir, sshgw.UserCAFile))
	if err != nil || !bytes.Contains(data, []byte("OPENSSH PRIVATE KEY")) {
		t.Errorf("file CA key not created: %v", err)
	}
}

func TestKeyVaultStartStopsWithoutAccess(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(*keyvaulttest.Vault)
		want  []string
	}{
		{"403", func(v *keyvaulttest.Vault) {
			v.AddKey("poolgate-user-ca", keyvaulttest.P256(t))
			v.Fail(keyvaulttest.Get, http.StatusForbidden, 0, -1)
		}, []string{"ca.key_vault: ", "403", "Key Vault Crypto User"}},
		{"404", func(v *keyvaulttest.Vault) {}, []string{"ca.key_vault: ", "poolgate-user-ca", "404"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := keyvaulttest.New()
			tt.setup(v)
			cfg := kvConfig(t, v)
			_, err := New(cfg, nil, fakeVault(v))
			if err == nil {
				t.Fatal("the gateway started without its CA")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, serr := os.Stat(filepath.Join(cfg.StateDir, sshgw.UserCAFile)); !os.IsNotExist(serr) {
				t.Error("fell back to a file CA")
			}
			if _, cerr := CALines(cfg, fakeVault(v)); cerr == nil {
				t.Error("ca-pubkey printed a line without access to the vault")
			}
		})
	}
}

// TestNewFailingAtStartClosesWhatItOpened: a start that fails (here the
// admin port is taken) reports the key and leaves no listener open; it
// used to panic closing a nil gateway.
func TestNewFailingAtStartClosesWhatItOpened(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sshAddr := free.Addr().String()
	free.Close()
	cfg := Config{StateDir: filepath.Join(t.TempDir(), "state")}
	cfg.SSH.Listen, cfg.Admin.Listen = sshAddr, busy.Addr().String()
	cfg.Discovery.Static = []discovery.StaticNode{{Name: "node-1", SSH: "127.0.0.1:1"}}
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "admin.listen") {
		t.Fatalf("New with a busy admin port: %v", err)
	}
	ln, err := net.Listen("tcp", sshAddr)
	if err != nil {
		t.Fatalf("ssh.listen still held after the failed start: %v", err)
	}
	ln.Close()
}
