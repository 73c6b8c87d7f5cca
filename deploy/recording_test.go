package deploy

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// With sessionRecording, the template creates a storage account of its
// own for the session recordings (Entra ID only), its container
// "recordings", Storage Blob Data Contributor on that container for each
// gateway's identity, a lifecycle rule (recordingRetentionDays) and,
// with recordingImmutableDays, a WORM policy on the container; the
// gateways' config gets recording.azure_blob. Without it, none of that.

const (
	blobDataContributorRole = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
	recordingContainer      = "recordings"
)

// recordingSection is the recording section as the gateway's config
// holds it, read from the YAML itself (the contract with the gateway).
type recordingSection struct {
	Recording *struct {
		Enabled   bool `yaml:"enabled"`
		AzureBlob *struct {
			AccountURL string         `yaml:"account_url"`
			Container  string         `yaml:"container"`
			Other      map[string]any `yaml:",inline"`
		} `yaml:"azure_blob"`
		Other map[string]any `yaml:",inline"`
	} `yaml:"recording"`
}

func readRecordingSection(t *testing.T, path string) recordingSection {
	t.Helper()
	var c recordingSection
	if err := yaml.Unmarshal([]byte(read(t, path)), &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// loadRecordingConfig loads the config with the gateway's own loader.
// recording.azure_blob is being added to the gateway in another change:
// until the loader knows it, its "unknown key" error for exactly
// recording.azure_blob is logged, not failed, and the rest (recording
// enabled included) is loaded without it; the section itself is then
// checked as YAML only (readRecordingSection).
func loadRecordingConfig(t *testing.T, path string) {
	t.Helper()
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatalf("the gateway's config does not load: %v\n%s", err, read(t, path))
	}
	if !cfg.Recording.Enabled || cfg.Recording.AzureBlob == nil || cfg.Recording.AzureBlob.Container != "recordings" ||
		!strings.HasPrefix(cfg.Recording.AzureBlob.AccountURL, "https://") || strings.HasSuffix(cfg.Recording.AzureBlob.AccountURL, "/") {
		t.Fatalf("recording as the gateway reads it: %+v %+v", cfg.Recording, cfg.Recording.AzureBlob)
	}
}

// recordingAccounts are the evaluated storage accounts for recordings
// (poolrec...).
func recordingAccounts(ev evaluated) []map[string]any {
	var out []map[string]any
	for _, a := range ev.resources("Microsoft.Storage/storageAccounts") {
		if strings.HasPrefix(a["name"].(string), "poolrec") {
			out = append(out, a)
		}
	}
	return out
}

func blobContributorAssignments(ev evaluated) []map[string]any {
	var out []map[string]any
	for _, ra := range ev.resources("Microsoft.Authorization/roleAssignments") {
		if strings.HasSuffix(str(dig(ra, "properties", "roleDefinitionId")), blobDataContributorRole) {
			out = append(out, ra)
		}
	}
	return out
}

func TestRecordingOffByDefault(t *testing.T) {
	for _, ha := range []bool{false, true} {
		ev := mustEval(t, withParams(map[string]any{"highAvailability": ha}), defaultWorld())
		if n := len(recordingAccounts(ev)); n != 0 {
			t.Errorf("the default deployment creates %d recordings accounts", n)
		}
		if n := len(ev.resources("Microsoft.Storage/storageAccounts")); n != 2 {
			t.Errorf("the default deployment creates %d storage accounts, want 2 (users' share, keys share)", n)
		}
		for _, typ := range []string{"Microsoft.Storage/storageAccounts/blobServices/containers", "Microsoft.Storage/storageAccounts/managementPolicies", "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies"} {
			if n := len(ev.resources(typ)); n != 0 {
				t.Errorf("the default deployment creates %d %s", n, typ)
			}
		}
		if n := len(blobContributorAssignments(ev)); n != 0 {
			t.Errorf("the default deployment assigns Storage Blob Data Contributor %d times", n)
		}
		script := extensionScript(t, ev, "poolgate-0")
		if !strings.Contains(script, "rec_url=''") || !strings.Contains(script, "rec_container=''") {
			t.Error("without sessionRecording, the script's recording placeholders are not empty")
		}
		path := gatewayConfigFile(t, ev)
		if c := readRecordingSection(t, path); c.Recording != nil {
			t.Errorf("the default config has a recording section: %+v", *c.Recording)
		}
		if strings.Contains(read(t, path), "recording") {
			t.Errorf("the default config mentions recording:\n%s", read(t, path))
		}
		if _, err := app.LoadConfig(path); err != nil {
			t.Errorf("the default config does not load: %v", err)
		}
	}
	// Retention and WORM without sessionRecording create nothing.
	ev := mustEval(t, withParams(map[string]any{"recordingRetentionDays": 30, "recordingImmutableDays": 365}), defaultWorld())
	if len(recordingAccounts(ev)) != 0 || len(ev.resources("Microsoft.Storage/storageAccounts/managementPolicies")) != 0 || len(ev.resources("Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies")) != 0 {
		t.Error("recordingRetentionDays or recordingImmutableDays without sessionRecording created recording resources")
	}
}

func TestRecordingOn(t *testing.T) {
	world := defaultWorld()
	rg := "/subscriptions/" + world.Subscription + "/resourceGroups/" + world.ResourceGroup
	for _, ha := range []bool{false, true} {
		ev := mustEval(t, withParams(map[string]any{"sessionRecording": true, "highAvailability": ha}), world)

		// The account: of its own, Entra ID only, HTTPS and TLS 1.2, no
		// public blobs.
		accounts := recordingAccounts(ev)
		if len(accounts) != 1 {
			t.Fatalf("sessionRecording: %d recordings accounts, want 1", len(accounts))
		}
		acct := accounts[0]
		name := acct["name"].(string)
		if name == storageAccount(t, ev) || name == keysAccount(t, ev) {
			t.Errorf("the recordings go into the account %s of a share", name)
		}
		if sku := str(dig(acct, "sku", "name")); acct["kind"] != "StorageV2" || (sku != "Standard_LRS" && sku != "Standard_ZRS") {
			t.Errorf("recordings account %s is %v %v, want StorageV2 Standard_LRS or Standard_ZRS", name, acct["kind"], sku)
		}
		for prop, want := range map[string]any{"supportsHttpsTrafficOnly": true, "minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false, "allowSharedKeyAccess": false} {
			if got := dig(acct, "properties", prop); got != want {
				t.Errorf("recordings account: %s = %v, want %v", prop, got, want)
			}
		}

		// The container, private.
		containers := ev.resources("Microsoft.Storage/storageAccounts/blobServices/containers")
		if len(containers) != 1 || containers[0]["name"] != name+"/default/"+recordingContainer {
			t.Fatalf("containers %v, want %s/default/%s", containers, name, recordingContainer)
		}
		if p := dig(containers[0], "properties", "publicAccess"); p != "None" {
			t.Errorf("the recordings container's publicAccess is %v, want None", p)
		}
		containerID := rg + "/providers/Microsoft.Storage/storageAccounts/" + name + "/blobServices/default/containers/" + recordingContainer

		// One Storage Blob Data Contributor per gateway, for that
		// gateway's identity, on the container alone.
		gateways := ev.resources("Microsoft.Compute/virtualMachines")
		principals := map[string]bool{}
		for _, ra := range blobContributorAssignments(ev) {
			if got := dig(ra, "properties", "roleDefinitionId"); got != "/subscriptions/"+world.Subscription+"/providers/Microsoft.Authorization/roleDefinitions/"+blobDataContributorRole {
				t.Errorf("roleDefinitionId %v", got)
			}
			if ra["scope"] != containerID {
				t.Errorf("Storage Blob Data Contributor on %v, want on the container %s only", ra["scope"], containerID)
			}
			if dig(ra, "properties", "principalType") != "ServicePrincipal" {
				t.Errorf("principalType %v", dig(ra, "properties", "principalType"))
			}
			principals[str(dig(ra, "properties", "principalId"))] = true
		}
		for _, vm := range gateways {
			id := rg + "/providers/Microsoft.Compute/virtualMachines/" + vm["name"].(string)
			if !principals[shortHash(id)[:32]] {
				t.Errorf("gateway %v's identity may not write recordings", vm["name"])
			}
		}
		if n := len(blobContributorAssignments(ev)); n != len(gateways) || len(principals) != len(gateways) {
			t.Errorf("%d Storage Blob Data Contributor assignments (%d identities) for %d gateways", n, len(principals), len(gateways))
		}
		// A gateway is configured (and poolgate started) only once it
		// may write.
		for _, ext := range ev.resources("Microsoft.Compute/virtualMachines/extensions") {
			if !strings.Contains(str(ext["dependsOn"]), containerID+"/providers/Microsoft.Authorization/roleAssignments/") {
				t.Errorf("%v does not wait for its role assignment on the container", ext["name"])
			}
		}

		// The lifecycle rule: every blob of the container, deleted 90
		// days (the default) after creation.
		checkLifecycle(t, ev, name, 90)
		if n := len(ev.resources("Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies")); n != 0 {
			t.Errorf("recordingImmutableDays 0 (the default): %d immutability policies", n)
		}

		// The config.
		path := gatewayConfigFile(t, ev)
		rec := readRecordingSection(t, path).Recording
		if rec == nil || rec.AzureBlob == nil {
			t.Fatalf("sessionRecording: the gateway's config has no recording.azure_blob:\n%s", read(t, path))
		}
		if !rec.Enabled || len(rec.Other) != 0 {
			t.Errorf("recording = %+v, want enabled and nothing else but azure_blob", *rec)
		}
		if got := *rec.AzureBlob; got.AccountURL != "https://"+name+".blob.core.windows.net" || got.Container != recordingContainer || len(got.Other) != 0 {
			t.Errorf("recording.azure_blob = %+v, want account_url https://%s.blob.core.windows.net (no trailing slash), container %s", got, name, recordingContainer)
		}
		loadRecordingConfig(t, path)
	}
}

// checkLifecycle: one management policy on the account, with one rule
// deleting the container's append and block blobs days after creation.
func checkLifecycle(t *testing.T, ev evaluated, account string, days int64) {
	t.Helper()
	policies := ev.resources("Microsoft.Storage/storageAccounts/managementPolicies")
	if len(policies) != 1 || policies[0]["name"] != account+"/default" {
		t.Fatalf("management policies %v, want %s/default", policies, account)
	}
	rules, _ := dig(policies[0], "properties", "policy", "rules").([]any)
	if len(rules) != 1 {
		t.Fatalf("lifecycle rules %v, want 1", rules)
	}
	r := rules[0]
	if dig(r, "enabled") != true || dig(r, "type") != "Lifecycle" {
		t.Errorf("lifecycle rule enabled %v, type %v", dig(r, "enabled"), dig(r, "type"))
	}
	if got := str(dig(r, "definition", "filters", "blobTypes")); got != `["appendBlob","blockBlob"]` {
		t.Errorf("lifecycle rule's blobTypes %s, want appendBlob and blockBlob (the .cast and .json)", got)
	}
	if got := str(dig(r, "definition", "filters", "prefixMatch")); got != `["`+recordingContainer+`/"]` {
		t.Errorf("lifecycle rule's prefixMatch %s, want the container", got)
	}
	actions, _ := dig(r, "definition", "actions").(map[string]any)
	if len(actions) != 1 || len(dig(actions, "baseBlob").(map[string]any)) != 1 {
		t.Errorf("lifecycle actions %v, want baseBlob.delete only", actions)
	}
	del, _ := dig(actions, "baseBlob", "delete").(map[string]any)
	if len(del) != 1 || del["daysAfterCreationGreaterThan"] != days {
		t.Errorf("lifecycle delete %v, want daysAfterCreationGreaterThan %d", del, days)
	}
}

func TestRecordingRetentionAndWORM(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"sessionRecording": true, "recordingRetentionDays": 400, "recordingImmutableDays": 365}), defaultWorld())
	name := recordingAccounts(ev)[0]["name"].(string)
	checkLifecycle(t, ev, name, 400)
	policies := ev.resources("Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies")
	if len(policies) != 1 {
		t.Fatalf("recordingImmutableDays 365: %d immutability policies, want 1", len(policies))
	}
	p := policies[0]
	if p["name"] != name+"/default/"+recordingContainer+"/default" {
		t.Errorf("immutability policy %v, want on %s/default/%s", p["name"], name, recordingContainer)
	}
	props, _ := p["properties"].(map[string]any)
	// allowProtectedAppendWrites: the gateway appends blocks to a
	// running session's .cast; without it, the first append after the
	// policy applies fails. No other property: the template never locks
	// the policy.
	if props["immutabilityPeriodSinceCreationInDays"] != int64(365) || props["allowProtectedAppendWrites"] != true || len(props) != 2 {
		t.Errorf("immutability policy properties %v, want 365 days with allowProtectedAppendWrites", props)
	}
	if !strings.Contains(str(p["dependsOn"]), "/containers/"+recordingContainer) {
		t.Errorf("the immutability policy does not wait for its container: %v", p["dependsOn"])
	}
}

// The template refuses, as Azure does, values outside the parameters'
// bounds.
func TestRecordingTemplateRefuses(t *testing.T) {
	for _, p := range []map[string]any{
		{"sessionRecording": true, "recordingRetentionDays": 0},
		{"sessionRecording": true, "recordingRetentionDays": 3651},
		{"sessionRecording": true, "recordingImmutableDays": -1},
		{"sessionRecording": true, "recordingImmutableDays": 146001},
		{"sessionRecording": "yes"},
	} {
		if _, err := evalTemplate(read(t, templatePath), withParams(p), defaultWorld()); err == nil {
			t.Errorf("the template takes %v", p)
		}
	}
}

// filesUnder lists the regular files under root (the scratch VM's).
func filesUnder(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, strings.TrimPrefix(path, root))
		}
		return nil
	})
	return out
}

// The script writes the account URL only if it is a blob endpoint
// (https://, a lower-case account name, .blob., a host name's
// characters): anything else fails the deployment before anything is
// written, and cannot reach the YAML or the shell.
func TestRecordingScriptChecksAccountURL(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"sessionRecording": true}), defaultWorld())
	script := extensionScript(t, ev, "poolgate-0")
	name := recordingAccounts(ev)[0]["name"].(string)
	urlLine := "rec_url='https://" + name + ".blob.core.windows.net'"
	containerLine := "rec_container='" + recordingContainer + "'"
	if !strings.Contains(script, urlLine) || !strings.Contains(script, containerLine) {
		t.Fatalf("the script does not get the account URL and container as placeholders (want %s and %s)", urlLine, containerLine)
	}
	for _, bad := range []string{
		"",
		"http://" + name + ".blob.core.windows.net",
		"https://" + name + ".blob.core.windows.net/",
		"https://" + name + ".blob.core.windows.net:443",
		"https://" + strings.ToUpper(name) + ".blob.core.windows.net",
		"https://pool.rec.blob.core.windows.net",
		"https://.blob.core.windows.net",
		"https://" + name + ".blob.",
		"https://" + name + ".blob..net",
		"https://" + name + ".file.core.windows.net",
		"https://evil.example.com",
		"https://" + name + ".blob.core.windows.net\nidentity:",
		"https://" + name + ".blob.core.windows.net\" x",
		"https://" + name + ".blob.core.windows.net/recordings",
		"https://" + name + ".blob.core.windows.net?sig=x",
		"$(touch $POOLGATE_CONFIGURE_ROOT/pwned)",
		"https://$(touch $POOLGATE_CONFIGURE_ROOT/pwned).blob.core.windows.net",
		"https://*.blob.core.windows.net",
	} {
		vm := newScratchVM(t)
		out, calls, err := vm.run(strings.Replace(script, urlLine, "rec_url='"+bad+"'", 1))
		if err == nil || !strings.Contains(out, "poolgate-configure: the recordings' account URL") {
			t.Errorf("URL %q: err %v, output %q; want a refusal", bad, err, out)
		}
		if files := filesUnder(t, vm.root); len(files) != 0 {
			t.Errorf("URL %q: the script wrote %v", bad, files)
		}
		if len(calls) != 0 {
			t.Errorf("URL %q: the script went on: %q", bad, calls)
		}
	}
	for _, bad := range []string{"", "Recordings", "re--cordings", "-recordings", "re", `rec"x`, "rec\nx"} {
		vm := newScratchVM(t)
		out, _, err := vm.run(strings.Replace(script, containerLine, "rec_container='"+bad+"'", 1))
		if err == nil || !strings.Contains(out, "poolgate-configure: the recordings' container") {
			t.Errorf("container %q: err %v, output %q; want a refusal", bad, err, out)
		}
		if files := filesUnder(t, vm.root); len(files) != 0 {
			t.Errorf("container %q: the script wrote %v", bad, files)
		}
	}
	// Other clouds' blob endpoints pass (the rest of the template is
	// for Azure's public cloud, see the README).
	for _, good := range []string{"https://" + name + ".blob.core.usgovcloudapi.net", "https://" + name + ".blob.core.chinacloudapi.cn"} {
		vm := newScratchVM(t)
		out, _, err := vm.run(strings.Replace(script, urlLine, "rec_url='"+good+"'", 1))
		if err != nil {
			t.Errorf("URL %q refused: %v\n%s", good, err, out)
			continue
		}
		if got := readRecordingSection(t, filepath.Join(vm.root, "etc/poolgate/poolgate.yaml")).Recording; got == nil || got.AzureBlob == nil || got.AzureBlob.AccountURL != good {
			t.Errorf("URL %q: recording section %+v", good, got)
		}
	}
}

// Turning recording on (or off) at a redeploy rewrites the config and
// restarts poolgate (which opens the recordings' store at start); the
// same deployment again restarts nothing.
func TestRecordingRedeploy(t *testing.T) {
	vm := newScratchVM(t)
	for i, step := range []struct {
		on, restart bool
	}{{false, true}, {true, true}, {true, false}, {false, true}} {
		ev := mustEval(t, withParams(map[string]any{"sessionRecording": step.on}), defaultWorld())
		out, calls, err := vm.run(extensionScript(t, ev, "poolgate-0"))
		if err != nil {
			t.Fatalf("step %d: %v\n%s", i, err, out)
		}
		if got := called(calls, "systemctl restart poolgate"); got != step.restart {
			t.Errorf("step %d: restarted = %v, want %v (%q)", i, got, step.restart, calls)
		}
		if got := readRecordingSection(t, filepath.Join(vm.root, "etc/poolgate/poolgate.yaml")).Recording != nil; got != step.on {
			t.Errorf("step %d: recording section = %v, want %v", i, got, step.on)
		}
	}
}
