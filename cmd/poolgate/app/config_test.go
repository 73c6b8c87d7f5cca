package app

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const minimal = "discovery:\n  static:\n    - {name: n1, ssh: '10.0.0.4:22'}\n"

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("p.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/var/lib/poolgate" || cfg.SSH.Listen != "0.0.0.0:22" || cfg.SSH.AuthorizedKeys != "/home/{user}/.ssh/authorized_keys" ||
		cfg.Health.Interval != 2*time.Second || cfg.ShutdownTimeout != 30*time.Second || cfg.SSH.PasswordPassthrough {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestParseConfigFull(t *testing.T) {
	doc := `state_dir: /srv/pg
ssh:
  listen: 0.0.0.0:2200
  authorized_keys: /share/home/{user}/.ssh/authorized_keys
  password_passthrough: true
  login_grace_time: 20s
balancer:
  affinity_grace: 45m
  max_sessions_per_node: 12
health:
  interval: 1s
  timeout: 500ms
  rise: 3
  fall: 4
discovery:
  static:
    - name: node-1
      ssh: 10.0.0.4:22
      http: 10.0.0.4:8000
      weight: 4
`
	cfg, err := ParseConfig("p.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SSH.Listen != "0.0.0.0:2200" || !cfg.SSH.PasswordPassthrough || cfg.SSH.LoginGraceTime != 20*time.Second ||
		cfg.Balancer.AffinityGrace != 45*time.Minute || cfg.Balancer.MaxSessionsPerNode != 12 ||
		cfg.Health.Timeout != 500*time.Millisecond || cfg.Health.Fall != 4 ||
		len(cfg.Discovery.Static) != 1 || cfg.Discovery.Static[0].Weight != 4 || cfg.Discovery.Static[0].HTTP != "10.0.0.4:8000" {
		t.Fatalf("parsed: %+v", cfg)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{"ssh:\n  lisen: x\n" + minimal, "p.yaml:2: ssh.lisen: unknown key (known here: "},
		{"ssh:\n  lisen: x\n" + minimal, " listen, "},
		{"http:\n  listen: x\n" + minimal, `p.yaml:2: http.listen: "x" is not host:port`},
		{"http:\n  tls: maybe\n" + minimal, `p.yaml:2: http.tls: want true or false, got "maybe"`},
		{"http:\n  upstream_pins: {node-1: 12}\n" + minimal, `p.yaml:2: http.upstream_pins.node-1: want "sha256:<hex>"`},
		{"http:\n  upstream_pins: [a]\n" + minimal, `p.yaml:2: http.upstream_pins: want a mapping, got a list`},
		{"http:\n  upstream_fingerprints: {node-1: 12}\n" + minimal, `p.yaml:2: http.upstream_fingerprints.node-1: want "sha256:<hex>"`},
		{"http:\n  upstream_fingerprints: {node-1: 'sha256:" + strings.Repeat("ab", 32) + "'}\n  upstream_pins: {node-2: 'sha256:" + strings.Repeat("ab", 32) + "'}\n" + minimal, `p.yaml:3: http.upstream_pins: the old name of upstream_fingerprints; give only upstream_fingerprints`},
		{"http:\n  cert_file: /c.pem\n" + minimal, `p.yaml:1: http.key_file: needed with cert_file`},
		{"http:\n  session_idle: soon\n" + minimal, `p.yaml:2: http.session_idle: "soon" is not a duration`},
		{"state:\n  redis: x\n" + minimal, "p.yaml:2: state.redis: not a Redis URL"},
		{"health:\n  interval: 5x\n" + minimal, `p.yaml:2: health.interval: "5x" is not a duration`},
		{"health:\n  interval: 30\n" + minimal, `p.yaml:2: health.interval: "30" is not a duration`},
		{"health:\n  rise: many\n" + minimal, `p.yaml:2: health.rise: want a whole number, got "many"`},
		{"health:\n  repin_after: -1m\n" + minimal, "p.yaml:2: health.repin_after: must not be negative, got -1m0s"},
		{"ssh:\n  password_passthrough: yes\n" + minimal, `p.yaml:2: ssh.password_passthrough: want true or false, got "yes"`},
		{"ssh: [1]\n" + minimal, "p.yaml:1: ssh: want a mapping of keys, got a list"},
		{"discovery:\n  static:\n    - {name: n1, ssh: '10.0.0.4:22', port: 1}\n", "p.yaml:3: discovery.static[0].port: unknown key"},
		{"discovery:\n  static:\n    - {name: n1, ssh: '10.0.0.4'}\n", "p.yaml:3: discovery.static[0].ssh:"},
		{"balancer:\n  affinity_grace: -1m\n" + minimal, "p.yaml:2: balancer.affinity_grace: must not be negative"},
		{"ssh:\n  authorized_keys: /etc/keys\n" + minimal, "p.yaml:2: ssh.authorized_keys:"},
		{"", "p.yaml: discovery.static: list at least one node"},
		{"ssh: {\n", "p.yaml:1: did not find expected node content"},
		{minimal + "---\nstate_dir: /x\n", "more than one YAML document"},
		{"identity:\n  oidc:\n    issuer: https://login.microsoftonline.com/0f0e0d0c-0000-4000-8000-000000000001/v2.0\n" + minimal, "p.yaml:2: identity.oidc.client_id: required"},
		{"identity:\n  oidc:\n    isuer: x\n" + minimal, "p.yaml:3: identity.oidc.isuer: unknown key"},
		{"identity:\n  key_ttl: soon\n" + minimal, `p.yaml:2: identity.key_ttl: "soon" is not a duration`},
		{"rdp:\n  gateway:\n    enabled: true\n" + minimal, "rdp.gateway.enabled: the RD Gateway runs on the HTTP front end's port: set http.listen too"},
		{"http:\n  listen: ':443'\nrdp:\n  gateway:\n    enabled: true\n    token_ttl: 48h\n" + minimal, "rdp.gateway.token_ttl: 48h0m0s is longer than a day"},
		{"http:\n  listen: ':443'\nrdp:\n  gateway:\n    enabled: true\n    address: 'pool.example.com:'\n" + minimal, "rdp.gateway.address:"},
		{"rdp:\n  gateway:\n    enable: true\n" + minimal, "p.yaml:3: rdp.gateway.enable: unknown key"},
	} {
		_, err := ParseConfig("p.yaml", []byte(tt.doc))
		var ce *ConfigError
		if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("config %q: error %v, want one containing %q", tt.doc, err, tt.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("ssh:\n  listen: ':22'\nhealth: {interval: 1s}\n" + minimal))
	f.Add([]byte("discovery: {static: [{name: a, ssh: 'b:1', weight: 2.5}]}"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, err := ParseConfig("f.yaml", doc)
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("accepted a config that does not validate: %v", verr)
			}
		}
	})
}

// TestParseScaleFromZero: discovery.azure.scale_from_zero takes true and
// false as before, and keys_only (starts for proven users only).
func TestParseScaleFromZero(t *testing.T) {
	azure := "discovery:\n  azure:\n    subscription_id: 00000000-0000-0000-0000-000000000000\n    resource_group: rg\n    scale_set: pool\n"
	for _, tt := range []struct {
		value         string // "" leaves the key out
		on, passwords bool
	}{
		{"", false, false},
		{"false", false, false},
		{"true", true, true},
		{"True", true, true},
		{"keys_only", true, false},
	} {
		doc := azure
		if tt.value != "" {
			doc += "    scale_from_zero: " + tt.value + "\n"
		}
		cfg, err := ParseConfig("p.yaml", []byte(doc))
		if err != nil {
			t.Fatalf("scale_from_zero: %s: %v", tt.value, err)
		}
		if z := cfg.Discovery.Azure.ScaleFromZero; z.On() != tt.on || z.ForPasswords() != tt.passwords {
			t.Errorf("scale_from_zero: %s gave %q: on %v, for passwords %v", tt.value, z, z.On(), z.ForPasswords())
		}
	}
	_, err := ParseConfig("p.yaml", []byte(azure+"    scale_from_zero: keys\n"))
	if want := `discovery.azure.scale_from_zero: "keys" is not one of false, true, keys_only`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a bad value: error %v, want one containing %q", err, want)
	}
}
