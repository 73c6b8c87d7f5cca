package identity

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigYAMLAndDefaults(t *testing.T) {
	var c Config
	err := yaml.Unmarshal([]byte(`
oidc:
  issuer: https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/v2.0
  client_id: 11111111-2222-3333-4444-555555555555
  username_claim: preferred_username
key_ttl: 8h
allowed_groups: [aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb]
ops_groups: [ops]
device_limit: {per_address: 2}
`), &c)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Enabled() || c.KeyTTL != 8*time.Hour || c.DeviceLimit.PerAddress != 2 {
		t.Fatalf("parsed %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d := Config{}.WithDefaults()
	if d.KeyTTL != 12*time.Hour || d.OIDC.UsernameClaim != "preferred_username" || !slices.Equal(d.OIDC.Scopes, []string{"openid", "profile", "email"}) ||
		d.OIDC.RequestTimeout != 10*time.Second || d.DeviceLimit != (DeviceLimit{PerAddress: 5, Total: 120, Window: time.Minute}) || d.Enabled() {
		t.Errorf("defaults = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("an empty section is valid: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const entra = "https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/v2.0"
	ok := func(c *Config) {}
	for _, tt := range []struct {
		name string
		set  func(c *Config)
		err  string // prefix; "" valid
	}{
		{"valid", ok, ""},
		{"other provider", func(c *Config) { c.OIDC.Issuer = "https://idp.example.com/realms/pool" }, ""},
		{"loopback http", func(c *Config) { c.OIDC.Issuer = "http://127.0.0.1:8080/" }, ""},
		{"secret file", func(c *Config) { c.OIDC.ClientSecretFile = secret }, ""},
		{"no issuer", func(c *Config) { c.OIDC.Issuer = "" }, "oidc.issuer: required when other identity keys are set"},
		{"no client", func(c *Config) { c.OIDC.ClientID = "" }, "oidc.client_id: required when oidc.issuer is set"},
		{"plain http", func(c *Config) { c.OIDC.Issuer = "http://idp.example.com" }, "oidc.issuer: \"http://idp.example.com\" must use https"},
		{"not a URL", func(c *Config) { c.OIDC.Issuer = "login.microsoftonline.com/x" }, "oidc.issuer: "},
		{"Entra common", func(c *Config) { c.OIDC.Issuer = "https://login.microsoftonline.com/common/v2.0" }, "oidc.issuer: Entra ID needs the tenant's own issuer"},
		{"Entra v1", func(c *Config) {
			c.OIDC.Issuer = "https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad"
		}, "oidc.issuer: Entra ID's issuer ends in /v2.0"},
		{"missing secret file", func(c *Config) { c.OIDC.ClientSecretFile = secret + ".none" }, "oidc.client_secret_file: "},
		{"no openid scope", func(c *Config) { c.OIDC.Scopes = []string{"profile"} }, "oidc.scopes: must include openid"},
		{"bad claim", func(c *Config) { c.OIDC.UsernameClaim = "a b" }, "oidc.username_claim: "},
		{"bad domain", func(c *Config) { c.OIDC.UsernameDomains = []string{"@contoso.com"} }, "oidc.username_domains[0]: "},
		{"negative ttl", func(c *Config) { c.KeyTTL = -time.Hour }, "key_ttl: must not be negative"},
		{"negative limit", func(c *Config) { c.DeviceLimit.PerAddress = -1 }, "device_limit.per_address: must not be negative"},
		{"empty group", func(c *Config) { c.OpsGroups = []string{" "} }, "ops_groups[0]: empty group"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{OIDC: OIDCConfig{Issuer: entra, ClientID: testClientID}, AllowedGroups: []string{"g"}}
			tt.set(&c)
			err := c.Validate()
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
				t.Fatalf("Validate = %v, want %q…", err, tt.err)
			}
		})
	}
	s, err := OIDCConfig{ClientSecretFile: secret}.readSecret()
	if err != nil || s != "s3cret" {
		t.Errorf("readSecret = %q, %v", s, err)
	}
}

// TestSetConfigLive: a reload's allowed groups hold for the next
// sign-in's claims; a change of issuer forgets what was discovered; a
// bad setting or turning sign-in off is refused and changes nothing.
func TestSetConfigLive(t *testing.T) {
	cfg := Config{OIDC: OIDCConfig{Issuer: "https://login.microsoftonline.com/0f0e0d0c-0000-4000-8000-000000000001/v2.0", ClientID: "c"}}
	p, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	next := p.Config()
	next.AllowedGroups = []string{"data-science"}
	next.KeyTTL = time.Hour
	if restart, err := p.SetConfig(next); err != nil || len(restart) != 0 {
		t.Fatalf("SetConfig: %v, restart %q", err, restart)
	}
	if got := p.Config(); got.KeyTTL != time.Hour || len(got.AllowedGroups) != 1 {
		t.Fatalf("after SetConfig: %+v", got)
	}
	if _, err := p.conf().mapClaims([]byte(`{"sub":"s","preferred_username":"frank@contoso.com","groups":["finance"]}`)); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("frank outside the new allowed_groups: %v", err)
	}
	p.disc = &discovered{}
	moved := p.Config()
	moved.OIDC.Issuer = "https://login.microsoftonline.com/0f0e0d0c-0000-4000-8000-000000000002/v2.0"
	moved.DeviceLimit.PerAddress = 9
	restart, err := p.SetConfig(moved)
	if err != nil || len(restart) != 1 || restart[0] != "device_limit" {
		t.Fatalf("a new issuer and device limit: %v, restart %q", err, restart)
	}
	if p.disc != nil {
		t.Fatal("a new issuer kept the old discovery")
	}
	off := p.Config()
	off.OIDC = OIDCConfig{}
	if _, err := p.SetConfig(off); err == nil {
		t.Fatal("turning sign-in off was taken live")
	}
	bad := p.Config()
	bad.KeyTTL = -time.Second
	if _, err := p.SetConfig(bad); err == nil || p.Config().KeyTTL == -time.Second {
		t.Fatalf("a negative key_ttl: %v, in force %v", err, p.Config().KeyTTL)
	}
}
