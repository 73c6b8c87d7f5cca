package deploy

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// These tests evaluate the template as Azure would and check what an
// operator would check after a deployment: does the gateway's config
// load, does Azure accept the autoscale setting, can the deployment be
// run again, where do the secrets go.

func customData(t *testing.T, r map[string]any) string {
	t.Helper()
	cd, _ := dig(r, "properties", "osProfile", "customData").(string)
	if cd == "" {
		cd, _ = dig(r, "properties", "virtualMachineProfile", "osProfile", "customData").(string)
	}
	b, err := base64.StdEncoding.DecodeString(cd)
	if err != nil {
		t.Fatalf("%v: customData is not base64: %v", r["name"], err)
	}
	return string(b)
}

// Defect 1: an Azure Cache for Redis key is base64 and may hold '/', '+'
// and '='; the gateway's config must still load, with that very key.
func TestRedisKeyWithURLCharacters(t *testing.T) {
	for _, key := range []string{"abc/def+ghi=", "//++==", "K3y+With/Slash=AndMore+/="} {
		world := defaultWorld()
		world.RedisKey = key
		ev := mustEval(t, withParams(map[string]any{"highAvailability": true}), world)
		cfg, err := app.LoadConfig(gatewayConfigFile(t, ev))
		if err != nil {
			t.Fatalf("key %q: the gateway's config does not load: %v", key, err)
		}
		if !cfg.State.Enabled() {
			t.Fatalf("key %q: highAvailability but no shared state", key)
		}
		opts, err := redis.ParseURL(cfg.State.Redis)
		if err != nil {
			t.Fatalf("key %q: %v", key, err)
		}
		if opts.Password != key || !strings.HasSuffix(opts.Addr, ".redis.cache.windows.net:6380") || opts.TLSConfig == nil {
			t.Errorf("key %q: Redis password %q, address %s, TLS %v", key, opts.Password, opts.Addr, opts.TLSConfig != nil)
		}
	}
}

// Defect 4: Azure refuses an autoscale profile unless minimum <= default
// <= maximum and each rule's step fits in maximum - minimum. Every
// combination the parameters allow is either refused by the template
// with a message, or deploys a profile Azure accepts.
func TestAutoscaleCapacityAccepted(t *testing.T) {
	for _, fromZero := range []bool{true, false} {
		for _, count := range []int64{0, 1, 2, 10, 11, 100} {
			for _, maxCount := range []int64{1, 2, 10, 100} {
				p := withParams(map[string]any{"scaleFromZero": fromZero, "nodeCount": count, "nodeMaxCount": maxCount, "gatewayCaPublicKey": testCA})
				ev, err := evalTemplate(read(t, templatePath), p, defaultWorld())
				if err != nil {
					if !strings.Contains(err.Error(), "nodeCount") && !strings.Contains(err.Error(), "nodeMaxCount") {
						t.Errorf("scaleFromZero=%v nodeCount=%d nodeMaxCount=%d refused without naming the parameter: %v", fromZero, count, maxCount, err)
					}
					continue
				}
				vmss := ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]
				capacity, _ := dig(vmss, "sku", "capacity").(int64)
				for _, as := range ev.resources("Microsoft.Insights/autoscalesettings") {
					profiles, _ := dig(as, "properties", "profiles").([]any)
					for _, pr := range profiles {
						c := dig(pr, "capacity").(map[string]any)
						lo, def, hi := atoi(t, c["minimum"]), atoi(t, c["default"]), atoi(t, c["maximum"])
						if lo > def || def > hi {
							t.Errorf("scaleFromZero=%v nodeCount=%d nodeMaxCount=%d: capacity min %d default %d max %d", fromZero, count, maxCount, lo, def, hi)
						}
						rules, _ := dig(pr, "rules").([]any)
						for _, r := range rules {
							if step := atoi(t, dig(r, "scaleAction", "value")); step > hi-lo {
								t.Errorf("scaleFromZero=%v nodeCount=%d nodeMaxCount=%d: step %d > max-min %d", fromZero, count, maxCount, step, hi-lo)
							}
						}
						if capacity < lo || capacity > hi {
							t.Errorf("scaleFromZero=%v nodeCount=%d nodeMaxCount=%d: scale set capacity %d outside autoscale [%d, %d]", fromZero, count, maxCount, capacity, lo, hi)
						}
					}
				}
				if capacity > maxCount {
					t.Errorf("nodeCount=%d nodeMaxCount=%d: scale set starts with %d", count, maxCount, capacity)
				}
				autoscaled := len(ev.resources("Microsoft.Insights/autoscalesettings")) == 1
				if autoscaled != (fromZero || maxCount > 1) {
					t.Errorf("scaleFromZero=%v nodeMaxCount=%d: autoscale setting deployed = %v", fromZero, maxCount, autoscaled)
				}
				msg, _ := ev.Outputs["nodeCapacity"].(string)
				if count > maxCount && !strings.Contains(msg, "lowered to nodeMaxCount") {
					t.Errorf("nodeCount=%d nodeMaxCount=%d clamped without saying so: %q", count, maxCount, msg)
				}
			}
		}
	}
	// Nodes without the gateway's CA cannot take users: the deployment
	// that has none yet starts no autoscale (which could add such nodes).
	for _, fromZero := range []bool{true, false} {
		ev := mustEval(t, withParams(map[string]any{"scaleFromZero": fromZero}), defaultWorld())
		if n := len(ev.resources("Microsoft.Insights/autoscalesettings")); n != 0 {
			t.Errorf("scaleFromZero=%v, no gatewayCaPublicKey: autoscale deployed", fromZero)
		}
		if c := dig(ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0], "sku", "capacity"); c != int64(0) {
			t.Errorf("first deployment starts %v nodes", c)
		}
	}
}

const testCA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICA poolgate-user-ca"

func atoi(t *testing.T, v any) int64 {
	t.Helper()
	switch v := v.(type) {
	case int64:
		return v
	case string:
		var n int64
		if err := json.Unmarshal([]byte(v), &n); err == nil {
			return n
		}
	}
	t.Fatalf("not a count: %#v", v)
	return 0
}

// Defect 7: a share above 5120 GiB needs large file shares on the
// account; the quota parameter's bound and the account must agree.
func TestShareQuotaBound(t *testing.T) {
	var tpl template
	_ = json.Unmarshal([]byte(read(t, templatePath)), &tpl)
	var def struct {
		MaxValue int64 `json:"maxValue"`
	}
	_ = json.Unmarshal(tpl.Parameters["shareQuotaGiB"], &def)
	ev := mustEval(t, withParams(map[string]any{"shareQuotaGiB": def.MaxValue}), defaultWorld())
	for _, sa := range ev.resources("Microsoft.Storage/storageAccounts") {
		if sa["name"] != storageAccount(t, ev) {
			continue // the keys share's account: 1 GiB
		}
		large := dig(sa, "properties", "largeFileSharesState") == "Enabled"
		if def.MaxValue > 5120 && !large {
			t.Errorf("shareQuotaGiB allows %d GiB but storage account %v does not enable large file shares (limit 5120 GiB)", def.MaxValue, sa["name"])
		}
	}
	if _, err := evalTemplate(read(t, templatePath), withParams(map[string]any{"shareQuotaGiB": def.MaxValue + 1}), defaultWorld()); err == nil {
		t.Errorf("a quota above maxValue was accepted")
	}
}

// Defect 7: the binary's URL carries a SAS token: it must not land in the
// deployment history in clear.
func TestSecretParameters(t *testing.T) {
	var tpl template
	_ = json.Unmarshal([]byte(read(t, templatePath)), &tpl)
	for _, name := range []string{"poolgateUrl", "jupyterhubCookieSecret"} {
		var def struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(tpl.Parameters[name], &def)
		if def.Type != "securestring" {
			t.Errorf("parameter %s is %q, want securestring", name, def.Type)
		}
	}
}

// Defect 9: the admin's sshd is open to no one until the operator names
// their range.
func TestAdminSourceHasNoDefault(t *testing.T) {
	_, err := evalTemplate(read(t, templatePath), withParams(map[string]any{"adminSourceAddressPrefix": nil}), defaultWorld())
	if err == nil || !strings.Contains(err.Error(), "adminSourceAddressPrefix") {
		t.Errorf("a deployment without adminSourceAddressPrefix was accepted (err %v)", err)
	}
	ev := mustEval(t, withParams(nil), defaultWorld())
	for _, nsg := range ev.resources("Microsoft.Network/networkSecurityGroups") {
		rules, _ := dig(nsg, "properties", "securityRules").([]any)
		for _, r := range rules {
			if dig(r, "properties", "destinationPortRange") == "2222" && dig(r, "properties", "sourceAddressPrefix") != "203.0.113.7/32" {
				t.Errorf("admin rule %v lets in %v, not the operator's range", dig(r, "name"), dig(r, "properties", "sourceAddressPrefix"))
			}
		}
	}
}

// TestReadmeWhatIf: the README gives the operator the what-if command to
// run before a deployment, with every parameter the template requires
// and none it does not know.
func TestReadmeWhatIf(t *testing.T) {
	readme := read(t, "README.md")
	i := strings.Index(readme, "az deployment group what-if -g $RG -f deploy/azure/azuredeploy.json")
	if i < 0 {
		t.Fatal("README.md has no az deployment group what-if command for the template")
	}
	cmd, _, _ := strings.Cut(readme[i:], "```")
	var tpl map[string]map[string]map[string]any
	_ = json.Unmarshal([]byte(read(t, templatePath)), &tpl)
	given := map[string]bool{}
	for _, f := range strings.Fields(strings.ReplaceAll(cmd, "\\\n", " ")) {
		if name, _, ok := strings.Cut(f, "="); ok && !strings.HasPrefix(f, "-") {
			name = strings.TrimLeft(name, `"`)
			if _, known := tpl["parameters"][name]; !known {
				t.Errorf("the what-if command passes %s, which the template does not have", name)
			}
			given[name] = true
		}
	}
	for name, def := range tpl["parameters"] {
		if _, has := def["defaultValue"]; !has && !given[name] {
			t.Errorf("the what-if command lacks the required parameter %s", name)
		}
	}
}

// TestDependsOnResolve: every dependsOn of the evaluated template names a
// resource the template deploys (with highAvailability, the conditional
// Redis, Key Vault and recording ones too), so the order it asks for is the order
// Azure follows. (A dependency on a resource whose condition is false is
// dropped by Azure.)
func TestDependsOnResolve(t *testing.T) {
	world := defaultWorld()
	ev := mustEval(t, withParams(map[string]any{"highAvailability": true, "gatewayCaPublicKey": testCA, "nodeCount": 2, "caKeyVault": true, "sessionRecording": true, "recordingImmutableDays": 365}), world)
	ids := map[string]bool{}
	for _, r := range ev.Resources {
		typ := strings.Split(r["type"].(string), "/")
		names := strings.Split(r["name"].(string), "/")
		id := "/subscriptions/" + world.Subscription + "/resourceGroups/" + world.ResourceGroup + "/providers/" + typ[0]
		if scope, ok := r["scope"].(string); ok { // an extension resource
			id = scope + "/providers/" + typ[0]
		}
		for i, n := range names {
			id += "/" + typ[i+1] + "/" + n
		}
		ids[id] = true
	}
	for _, r := range ev.Resources {
		deps, _ := r["dependsOn"].([]any)
		for _, d := range deps {
			if !ids[d.(string)] {
				t.Errorf("%v %v depends on %v, which the template does not deploy", r["type"], r["name"], d)
			}
		}
	}
}
