package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/poolgate/poolgate/gateway/identity"
)

// Issue 23: with entraTenantId (and the app registration's client ID),
// the gateway's configure script writes the identity section (sign-in
// with Microsoft Entra ID); without it, none. Every value is checked on
// the VM before anything is written, and a bad one fails the deployment
// with a poolgate-configure: line.

const (
	testTenant = "72F988BF-86F1-41AF-91AB-2D7CD011DB47" // upper case: Entra's claims are lower case
	testClient = "0b7e3f4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	testGroupA = "11111111-2222-3333-4444-555555555555"
	testGroupB = "AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee"
	testOps    = "99999999-8888-7777-6666-555555555555"
)

// identitySection is the identity section as the gateway's config holds
// it, read from the YAML itself (the contract with the gateway).
type identitySection struct {
	Identity *struct {
		OIDC *struct {
			Issuer        string         `yaml:"issuer"`
			ClientID      string         `yaml:"client_id"`
			SecretFile    *string        `yaml:"client_secret_file"`
			UsernameClaim string         `yaml:"username_claim"`
			Other         map[string]any `yaml:",inline"`
		} `yaml:"oidc"`
		KeyTTL        string         `yaml:"key_ttl"`
		AllowedGroups []string       `yaml:"allowed_groups"`
		OpsGroups     []string       `yaml:"ops_groups"`
		Other         map[string]any `yaml:",inline"`
	} `yaml:"identity"`
}

func readIdentitySection(t *testing.T, path string) identitySection {
	t.Helper()
	var c identitySection
	if err := yaml.Unmarshal([]byte(read(t, path)), &c); err != nil {
		t.Fatalf("%s does not parse: %v\n%s", path, err, read(t, path))
	}
	return c
}

// checkWithIdentityPackage decodes the identity section into the
// gateway's own identity.Config, strictly (a key it does not know
// fails), and validates it; the app's config loader does not read the
// section yet (loadGatewayConfig's pending), this does meanwhile.
func checkWithIdentityPackage(t *testing.T, path string) identity.Config {
	t.Helper()
	var doc struct {
		Identity yaml.Node `yaml:"identity"`
	}
	if err := yaml.Unmarshal([]byte(read(t, path)), &doc); err != nil {
		t.Fatal(err)
	}
	section, err := yaml.Marshal(&doc.Identity)
	if err != nil {
		t.Fatal(err)
	}
	var c identity.Config
	dec := yaml.NewDecoder(strings.NewReader(string(section)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("the identity section does not decode into identity.Config: %v\n%s", err, section)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("identity.Config.Validate: %v\n%s", err, section)
	}
	if !c.Enabled() {
		t.Fatalf("identity.Config is not enabled:\n%s", section)
	}
	return c
}

func entraParams(over map[string]any) map[string]any {
	p := map[string]any{
		"entraTenantId":      testTenant,
		"entraClientId":      testClient,
		"entraAllowedGroups": []any{testGroupA, testGroupB},
		"entraOpsGroups":     []any{testOps},
	}
	for k, v := range over {
		p[k] = v
	}
	return withParams(p)
}

func TestIdentityOffByDefault(t *testing.T) {
	for _, p := range []map[string]any{
		withParams(nil),
		// The TTL alone turns nothing on.
		withParams(map[string]any{"identityKeyTtl": "8h", "highAvailability": true}),
	} {
		path := gatewayConfigFile(t, mustEval(t, p, defaultWorld()))
		if c := readIdentitySection(t, path); c.Identity != nil {
			t.Errorf("without entraTenantId the config has an identity section: %+v", *c.Identity)
		}
		if strings.Contains(read(t, path), "login.microsoftonline.com") {
			t.Errorf("without entraTenantId the config names Entra ID:\n%s", read(t, path))
		}
		loadGatewayConfig(t, path)
	}
}

func TestIdentityOn(t *testing.T) {
	ev := mustEval(t, entraParams(map[string]any{"highAvailability": true}), defaultWorld())
	if extensionScript(t, ev, "poolgate-0") != extensionScript(t, ev, "poolgate-1") {
		t.Error("the two gateways get different configure scripts")
	}
	path := gatewayConfigFile(t, ev)
	c := readIdentitySection(t, path)
	if c.Identity == nil || c.Identity.OIDC == nil {
		t.Fatalf("with entraTenantId the config has no identity.oidc:\n%s", read(t, path))
	}
	id := *c.Identity
	oidc := *id.OIDC
	tenant := strings.ToLower(testTenant)
	if oidc.Issuer != "https://login.microsoftonline.com/"+tenant+"/v2.0" {
		t.Errorf("issuer %q, want Entra's v2.0 issuer of tenant %s (lower case, as Entra's discovery document has it)", oidc.Issuer, tenant)
	}
	if oidc.ClientID != testClient || oidc.UsernameClaim != "preferred_username" || oidc.SecretFile != nil || len(oidc.Other) != 0 {
		t.Errorf("identity.oidc = %+v; want client_id %s, username_claim preferred_username, no client_secret_file (a public client), nothing else", oidc, testClient)
	}
	if want := []string{testGroupA, strings.ToLower(testGroupB)}; !slices.Equal(id.AllowedGroups, want) {
		t.Errorf("allowed_groups %q, want %q", id.AllowedGroups, want)
	}
	if want := []string{testOps}; !slices.Equal(id.OpsGroups, want) {
		t.Errorf("ops_groups %q, want %q", id.OpsGroups, want)
	}
	if id.KeyTTL != "12h" || len(id.Other) != 0 {
		t.Errorf("key_ttl %q (want the default 12h), other keys %v", id.KeyTTL, id.Other)
	}
	c2 := checkWithIdentityPackage(t, path)
	if c2.KeyTTL != 12*time.Hour || !slices.Equal(c2.AllowedGroups, id.AllowedGroups) || !slices.Equal(c2.OpsGroups, id.OpsGroups) || c2.OIDC.Issuer != oidc.Issuer {
		t.Errorf("identity.Config reads %+v", c2)
	}
	loadGatewayConfig(t, path)
}

// No groups: every user of the tenant may sign in, and nobody is ops
// through the sign-in; the lists are written empty, not left out.
func TestIdentityWithoutGroups(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"entraTenantId": testTenant, "entraClientId": testClient, "identityKeyTtl": "90m"}), defaultWorld())
	path := gatewayConfigFile(t, ev)
	c := readIdentitySection(t, path)
	if c.Identity == nil {
		t.Fatalf("no identity section:\n%s", read(t, path))
	}
	if c.Identity.AllowedGroups == nil || len(c.Identity.AllowedGroups) != 0 || c.Identity.OpsGroups == nil || len(c.Identity.OpsGroups) != 0 {
		t.Errorf("allowed_groups %#v, ops_groups %#v; want both written as []", c.Identity.AllowedGroups, c.Identity.OpsGroups)
	}
	if c.Identity.KeyTTL != "90m" {
		t.Errorf("key_ttl %q, want 90m", c.Identity.KeyTTL)
	}
	if c2 := checkWithIdentityPackage(t, path); c2.KeyTTL != 90*time.Minute || len(c2.AllowedGroups) != 0 {
		t.Errorf("identity.Config reads %+v", c2)
	}
	for _, want := range []string{"  allowed_groups: []\n", "  ops_groups: []\n"} {
		if !strings.Contains(read(t, path), want) {
			t.Errorf("the config lacks %q", want)
		}
	}
	loadGatewayConfig(t, path)
}

// Turning the sign-in on restarts poolgate once; the same deployment
// again restarts nothing; turning it off takes the section out.
func TestIdentityRedeploy(t *testing.T) {
	vm := newScratchVM(t)
	yamlPath := filepath.Join(vm.root, "etc/poolgate/poolgate.yaml")
	for i, step := range []struct {
		params  map[string]any
		restart bool
		on      bool
	}{
		{withParams(nil), true, false},
		{entraParams(nil), true, true},
		{entraParams(nil), false, true},
		{entraParams(map[string]any{"entraOpsGroups": []any{}}), true, true},
		{withParams(nil), true, false},
	} {
		script := extensionScript(t, mustEval(t, step.params, defaultWorld()), "poolgate-0")
		out, calls, err := vm.run(script)
		if err != nil {
			t.Fatalf("step %d: %v\n%s", i, err, out)
		}
		if got := called(calls, "systemctl restart poolgate"); got != step.restart {
			t.Errorf("step %d: restarted = %v, want %v (%q)", i, got, step.restart, calls)
		}
		if got := readIdentitySection(t, yamlPath).Identity != nil; got != step.on {
			t.Errorf("step %d: identity section = %v, want %v", i, got, step.on)
		}
	}
}

// A value that is not what Entra gives (a GUID, a duration) fails the
// deployment with a poolgate-configure: line naming the parameter, before
// anything is written; a quote or a newline in a value cannot reach the
// shell (the template passes the values base64-encoded).
func TestIdentityRefusesMalformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params map[string]any
		want   string
	}{
		{"group ID not a GUID", entraParams(map[string]any{"entraAllowedGroups": []any{testGroupA, "Pool Users"}}), `entraAllowedGroups: "Pool Users" is not a group's object ID`},
		{"group ID one digit short", entraParams(map[string]any{"entraAllowedGroups": []any{testGroupA[:35]}}), "entraAllowedGroups: "},
		{"group ID of hyphens only", entraParams(map[string]any{"entraOpsGroups": []any{strings.Repeat("-", 36)}}), "entraOpsGroups: "},
		{"group ID with a quote", entraParams(map[string]any{"entraOpsGroups": []any{`x", "` + testOps}}), "entraOpsGroups: "},
		{"group ID with shell", entraParams(map[string]any{"entraAllowedGroups": []any{`'; touch "$POOLGATE_CONFIGURE_ROOT/pwned"; '`}}), "entraAllowedGroups: "},
		{"group ID with a newline", entraParams(map[string]any{"entraAllowedGroups": []any{testGroupA + "\n" + testGroupB}}), "entraAllowedGroups: "},
		{"group ID with a glob", entraParams(map[string]any{"entraAllowedGroups": []any{"*"}}), `entraAllowedGroups: "*"`},
		{"empty group ID", entraParams(map[string]any{"entraAllowedGroups": []any{testGroupA, ""}}), "entraAllowedGroups: an empty object ID"},
		{"tenant as a domain name", entraParams(map[string]any{"entraTenantId": "contoso.onmicrosoft.com"}), "entraTenantId \"contoso.onmicrosoft.com\" is not a tenant ID"},
		{"no client ID", entraParams(map[string]any{"entraClientId": nil}), "entraClientId \"\" is not an application (client) ID"},
		{"TTL not a duration", entraParams(map[string]any{"identityKeyTtl": "12 hours"}), "identityKeyTtl \"12 hours\" is not a duration"},
		{"groups without a tenant", withParams(map[string]any{"entraClientId": testClient, "entraAllowedGroups": []any{testGroupA}}), "entraClientId, entraAllowedGroups and entraOpsGroups take effect only with entraTenantId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := extensionScript(t, mustEval(t, tc.params, defaultWorld()), "poolgate-0")
			vm := newScratchVM(t)
			out, calls, err := vm.run(script)
			if err == nil || !strings.Contains(out, "poolgate-configure: "+tc.want) {
				t.Errorf("err %v, output %q; want a failure saying %q", err, out, tc.want)
			}
			if _, err := os.Stat(filepath.Join(vm.root, "etc/poolgate/poolgate.yaml")); err == nil {
				t.Error("a config was written anyway")
			}
			if _, err := os.Stat(filepath.Join(vm.root, "pwned")); err == nil {
				t.Error("a parameter's value ran as shell")
			}
			if len(calls) != 0 {
				t.Errorf("the script went on: %q", calls)
			}
		})
	}
}

// The template refuses, as Azure does, what is no tenant or client ID
// by its length alone, and group lists that hold other than strings.
func TestIdentityTemplateRefuses(t *testing.T) {
	for _, p := range []map[string]any{
		entraParams(map[string]any{"entraTenantId": testTenant + "0"}),
		entraParams(map[string]any{"entraClientId": "https://" + testClient}),
		entraParams(map[string]any{"entraAllowedGroups": testGroupA}),
		entraParams(map[string]any{"entraOpsGroups": []any{7}}),
	} {
		if _, err := evalTemplate(read(t, templatePath), p, defaultWorld()); err == nil {
			t.Errorf("the template takes %v", p)
		}
	}
}

// sssdConf is an sssd.conf as realm join writes it for Entra Domain
// Services, with fully qualified names.
const sssdConf = `[sssd]
domains = aadds.contoso.com
config_file_version = 2
services = nss, pam

[domain/aadds.contoso.com]
default_shell = /bin/bash
krb5_realm = AADDS.CONTOSO.COM
use_fully_qualified_names = True
fallback_homedir = /home/%u@%d
ad_domain = aadds.contoso.com
access_provider = ad

[nss]
filter_users = root
`

// With the sign-in on, a node with an sssd.conf knows users by their
// short name (the gateway's mapped name), once; without it, or without
// an sssd.conf, nothing changes.
func TestNodeSSSDShortNames(t *testing.T) {
	on := extensionScript(t, mustEval(t, entraParams(map[string]any{"gatewayCaPublicKey": testCA}), defaultWorld()), "")
	off := extensionScript(t, mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA}), defaultWorld()), "")
	const conf = "etc/sssd/sssd.conf"
	setup := func(t *testing.T, withConf bool) *scratchVM {
		vm := newScratchVM(t)
		if withConf {
			p := filepath.Join(vm.root, conf)
			_ = os.MkdirAll(filepath.Dir(p), 0o711)
			if err := os.WriteFile(p, []byte(sssdConf), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return vm
	}

	vm := setup(t, true)
	for run := 0; run < 2; run++ {
		out, calls, err := vm.run(on)
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
		if got := called(calls, "systemctl try-restart sssd"); got != (run == 0) {
			t.Errorf("run %d: sssd restarted = %v (%q)", run, got, calls)
		}
		if got := called(calls, "sss_cache -E"); got != (run == 0) {
			t.Errorf("run %d: sssd's cache cleared = %v", run, got)
		}
	}
	got, mode := vm.file(conf)
	want := strings.Replace(strings.Replace(sssdConf, "use_fully_qualified_names = True\nfallback", "fallback", 1),
		"[domain/aadds.contoso.com]\n", "[domain/aadds.contoso.com]\nuse_fully_qualified_names = False\n", 1)
	if got != want || mode != 0o600 {
		t.Errorf("sssd.conf (mode %v):\n%s\nwant (0600):\n%s", mode, got, want)
	}

	// Sign-in off: an sssd.conf is the operator's.
	vm = setup(t, true)
	if out, calls, err := vm.run(off); err != nil || called(calls, "systemctl try-restart sssd") {
		t.Errorf("sign-in off: err %v, calls %q\n%s", err, calls, out)
	}
	if got, _ := vm.file(conf); got != sssdConf {
		t.Errorf("sign-in off: sssd.conf changed:\n%s", got)
	}

	// No SSSD on the node: none is made.
	vm = setup(t, false)
	if out, calls, err := vm.run(on); err != nil || called(calls, "systemctl try-restart sssd") {
		t.Errorf("no sssd.conf: err %v, calls %q\n%s", err, calls, out)
	}
	if _, err := os.Stat(filepath.Join(vm.root, conf)); err == nil {
		t.Error("an sssd.conf was made on a node without SSSD")
	}
}
