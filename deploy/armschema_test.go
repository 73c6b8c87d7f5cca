package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dlclark/regexp2/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The ARM resource schemas (draft-04) live outside the repository, in
// shared/arm-schemas beside the checkout (see its README), or beside a
// folder above it (a git worktree in a subfolder finds the one of its
// main checkout); POOLGATE_ARM_SCHEMAS names another folder, or several
// (a path list, as PATH: a schema is taken from the first folder that
// has it).
const schemaURLPrefix = "https://schema.management.azure.com/schemas/"

func armSchemaDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("POOLGATE_ARM_SCHEMAS")
	if dir == "" {
		dir = findSharedSchemas()
	}
	if _, err := os.Stat(filepath.Join(filepath.SplitList(dir)[0], "common", "definitions.json")); err != nil {
		msg := fmt.Sprintf("the ARM schemas are needed to check the template (set POOLGATE_ARM_SCHEMAS or put them in %s): %v", dir, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + " (skipped because CI is unset; with CI set this fails)")
	}
	return dir
}

// findSharedSchemas is the first shared/arm-schemas beside the checkout
// (../../shared from this package) or beside one of the folders above it,
// or the one beside the checkout when there is none.
func findSharedSchemas() string {
	beside := filepath.Join("..", "..", "shared", "arm-schemas")
	up, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return beside
	}
	for {
		dir := filepath.Join(up, "shared", "arm-schemas")
		if _, err := os.Stat(filepath.Join(dir, "common", "definitions.json")); err == nil {
			return dir
		}
		parent := filepath.Dir(up)
		if parent == up {
			return beside
		}
		up = parent
	}
}

// schemaLoader maps the schemas' canonical URLs to files in dir and
// refuses every other URL: nothing is fetched.
type schemaLoader string

// absentFiles are schema files that the folder does not hold but that
// files it holds point to; they load as a placeholder whose definitions
// accept anything. Microsoft.Compute.json points to
// Microsoft.Compute.Extensions.json for the "properties" of extensions: a
// VM's nested child resources (which the template does not use: its
// extension is a top-level resource, see propertiesOnly) and a scale
// set's extensionProfile (checked against the API model instead, see
// validateExtensionModels).
var absentFiles = []string{"2024-03-01/Microsoft.Compute.Extensions.json"}

func (dir schemaLoader) Load(url string) (any, error) {
	url, _, _ = strings.Cut(url, "#")
	rel, ok := strings.CutPrefix(url, schemaURLPrefix)
	if !ok {
		return nil, fmt.Errorf("%s is not an ARM schema URL; nothing is fetched", url)
	}
	var f *os.File
	var err error
	for _, d := range filepath.SplitList(string(dir)) {
		if f, err = os.Open(filepath.Join(d, filepath.FromSlash(rel))); !os.IsNotExist(err) {
			break
		}
	}
	if os.IsNotExist(err) && slices.Contains(absentFiles, rel) {
		return dir.placeholder(rel)
	}
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%w: add schemas/%s of Azure/azure-resource-manager-schemas to the schema folder (%s)", err, rel, dir)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return jsonschema.UnmarshalJSON(f)
}

// placeholder is a schema document for an absent file: every definition
// that the folder's files name in it, as an empty (accept-all) schema.
func (dir schemaLoader) placeholder(rel string) (any, error) {
	var files []string
	for _, d := range filepath.SplitList(string(dir)) {
		more, err := filepath.Glob(filepath.Join(d, "*", "*.json"))
		if err != nil {
			return nil, err
		}
		files = append(files, more...)
	}
	defs := map[string]any{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		text := string(b)
		needle := rel + "#/definitions/"
		for i := strings.Index(text, needle); i >= 0; i = strings.Index(text, needle) {
			text = text[i+len(needle):]
			name, _, _ := strings.Cut(text, `"`)
			defs[name] = map[string]any{}
		}
	}
	return map[string]any{"$schema": "http://json-schema.org/draft-04/schema#", "id": schemaURLPrefix + rel + "#", "definitions": defs}, nil
}

// ecmaRegexp runs the schemas' patterns as JSON Schema means them
// (ECMA-262: the storage schema uses look-ahead, which Go's regexp lacks).
type ecmaRegexp struct{ re *regexp2.Regexp }

func (r ecmaRegexp) MatchString(s string) bool {
	ok, err := r.re.MatchString(s)
	return err == nil && ok
}

func (r ecmaRegexp) String() string { return r.re.String() }

func compileECMA(s string) (jsonschema.Regexp, error) {
	re, err := regexp2.Compile(s, regexp2.ECMAScript)
	if err != nil {
		return nil, err
	}
	return ecmaRegexp{re}, nil
}

// schemaFile is the schema file of a resource type's provider namespace.
func schemaFile(apiVersion, typ string) string {
	ns, _, _ := strings.Cut(typ, "/")
	if ns == "Microsoft.Network" {
		ns = "Microsoft.Network.NRP"
	}
	return schemaURLPrefix + apiVersion + "/" + ns + ".json"
}

// propertiesOnly names resource types that the schema folder has no
// resource definition for, with the definition their "properties" follow.
// Microsoft.Compute/virtualMachines/extensions is described by
// Microsoft.Compute.Extensions.json, which the folder does not hold; the
// API model of an extension's properties is in Microsoft.Compute.json.
var propertiesOnly = map[string]string{
	"Microsoft.Compute/virtualMachines/extensions": "VirtualMachineExtensionProperties",
}

type armSchemas struct {
	c     *jsonschema.Compiler
	cache map[string]*jsonschema.Schema
}

func newARMSchemas(dir string) *armSchemas {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	c.UseLoader(schemaLoader(dir))
	c.UseRegexpEngine(compileECMA)
	return &armSchemas{c: c, cache: map[string]*jsonschema.Schema{}}
}

func (a *armSchemas) compile(loc string) (*jsonschema.Schema, error) {
	if s, ok := a.cache[loc]; ok {
		return s, nil
	}
	s, err := a.c.Compile(loc)
	if err != nil {
		return nil, err
	}
	a.cache[loc] = s
	return s, nil
}

// validateResource checks one resource of the template (as written, with
// expressions) against its schema: first the schema itself, then strict
// mode, which refuses property names that no schema for that place names.
func (a *armSchemas) validateResource(r map[string]any) []error {
	return a.validate(r, true)
}

// openEnums are values whose schema is a closed list of names that Azure
// does not hold to: the REST API declares a VM's size an extensible enum
// (any size of the region), but the schema lists the sizes of 2015 and
// would refuse Standard_D2s_v5. The evaluated check stands an expression
// in for them, as the template has.
var openEnums = [][]string{{"properties", "hardwareProfile", "vmSize"}}

// validateEvaluated checks a resource of the evaluated template.
func (a *armSchemas) validateEvaluated(r map[string]any) []error {
	b, _ := json.Marshal(r)
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	for _, path := range openEnums {
		m := c
		for _, k := range path[:len(path)-1] {
			m, _ = m[k].(map[string]any)
		}
		if _, ok := m[path[len(path)-1]]; ok {
			m[path[len(path)-1]] = "[parameters('size')]"
		}
	}
	// A child resource written at the top level is named
	// "parent/child", while its schema's name pattern is the child's
	// own name (as when nested): check the last segment. Singleton
	// children (a storage account's managementPolicies, a container's
	// immutabilityPolicies) are always named "default", which their
	// schemas check on the whole name (^.*/default$): keep it whole.
	if typ, _ := c["type"].(string); strings.Count(typ, "/") > 1 {
		if name, ok := c["name"].(string); ok && !strings.HasSuffix(name, "/default") {
			c["name"] = name[strings.LastIndex(name, "/")+1:]
		}
	}
	return a.validate(c, false)
}

func (a *armSchemas) validate(r map[string]any, written bool) []error {
	typ, _ := r["type"].(string)
	apiVersion, _ := r["apiVersion"].(string)
	body := map[string]any{}
	for k, v := range r {
		switch k {
		case "condition", "copy", "dependsOn", "comments", "scope":
			// Template syntax, not the resource's: scope says which
			// resource an extension resource (a role assignment) is on.
		case "name":
			// A name written as an expression is evaluated before the
			// provider sees it (and the schemas' length limits apply to
			// the value, not to the expression): stand in a plain name.
			// A singleton child's name, format('{0}/default', ...),
			// keeps its literal "/default", which its schema's
			// pattern asks for.
			if s, _ := v.(string); written && strings.HasPrefix(s, "[") {
				v = "evaluatedname0"
				if strings.HasPrefix(s, "[format('") && strings.Contains(s, "/default', ") {
					v = "evaluatedname0/default"
				}
			}
			body[k] = v
		default:
			body[k] = v
		}
	}
	inst, err := toSchemaValue(body)
	if err != nil {
		return []error{err}
	}
	file := schemaFile(apiVersion, typ)
	var sch *jsonschema.Schema
	if def, ok := propertiesOnly[typ]; ok {
		sch, err = a.compile(file + "#/definitions/" + def)
		if err != nil {
			return []error{fmt.Errorf("%s: %w", typ, err)}
		}
		props, _ := inst.(map[string]any)["properties"]
		inst = props
		for k := range body {
			if !slices.Contains([]string{"type", "apiVersion", "name", "location", "properties", "tags"}, k) {
				return []error{fmt.Errorf("%s: unknown property %q", typ, k)}
			}
		}
	} else {
		_, path, _ := strings.Cut(typ, "/")
		sch, err = a.compile(file + "#/resourceDefinitions/" + strings.ReplaceAll(path, "/", "_"))
		if err != nil {
			return []error{fmt.Errorf("%s (API %s): no schema: %w", typ, apiVersion, err)}
		}
	}
	var errs []error
	if err := sch.Validate(inst); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, strictCheck(inst, []*jsonschema.Schema{sch}, "")...)
	errs = append(errs, a.validateExtensionModels(typ, file, inst)...)
	return errs
}

// The schema of a scale set's extension points its "properties" to the
// absent Microsoft.Compute.Extensions.json (see absentFiles), which would
// leave them unchecked; they are checked against the API model in
// Microsoft.Compute.json instead.
func (a *armSchemas) validateExtensionModels(typ, file string, inst any) []error {
	if typ != "Microsoft.Compute/virtualMachineScaleSets" {
		return nil
	}
	exts, _ := dig(inst, "properties", "virtualMachineProfile", "extensionProfile", "extensions").([]any)
	if len(exts) == 0 {
		return nil
	}
	sch, err := a.compile(file + "#/definitions/VirtualMachineScaleSetExtensionProperties")
	if err != nil {
		return []error{err}
	}
	var errs []error
	for i, e := range exts {
		props := dig(e, "properties")
		if err := sch.Validate(props); err != nil {
			errs = append(errs, fmt.Errorf("extension %d: %w", i, err))
		}
		errs = append(errs, strictCheck(props, []*jsonschema.Schema{sch}, fmt.Sprintf("/properties/virtualMachineProfile/extensionProfile/extensions/%d/properties", i))...)
	}
	return errs
}

// toSchemaValue re-decodes a value the way the validator wants it
// (numbers as json.Number).
func toSchemaValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
}

// expand follows $ref and the allOf, anyOf and oneOf branches: every
// schema that may speak about the value.
func expand(schemas []*jsonschema.Schema) []*jsonschema.Schema {
	var out []*jsonschema.Schema
	seen := map[*jsonschema.Schema]bool{}
	var walk func(s *jsonschema.Schema)
	walk = func(s *jsonschema.Schema) {
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		out = append(out, s)
		walk(s.Ref)
		for _, group := range [][]*jsonschema.Schema{s.AllOf, s.AnyOf, s.OneOf} {
			for _, b := range group {
				walk(b)
			}
		}
	}
	for _, s := range schemas {
		walk(s)
	}
	return out
}

// strictCheck reports object keys that none of the schemas for their place
// declare, where none of them allows other keys. ARM ignores or refuses
// unknown names depending on the provider; a misspelt property is a bug
// either way. Template expressions stand for whole values and are skipped.
func strictCheck(v any, schemas []*jsonschema.Schema, at string) []error {
	all := expand(schemas)
	switch v := v.(type) {
	case map[string]any:
		known := map[string][]*jsonschema.Schema{}
		open := false
		for _, s := range all {
			for name, p := range s.Properties {
				known[name] = append(known[name], p)
			}
			switch ap := s.AdditionalProperties.(type) {
			case bool:
				open = open || ap
			case *jsonschema.Schema:
				open = true
			}
			if len(s.PatternProperties) > 0 {
				open = true
			}
		}
		if len(known) == 0 {
			open = true // a free-form object, e.g. an extension's settings
		}
		var errs []error
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sub, ok := known[k]
			if !ok {
				if !open {
					names := make([]string, 0, len(known))
					for n := range known {
						names = append(names, n)
					}
					sort.Strings(names)
					errs = append(errs, fmt.Errorf("%s/%s: unknown property (the schema knows %s)", at, k, strings.Join(names, ", ")))
				}
				continue
			}
			errs = append(errs, strictCheck(v[k], sub, at+"/"+k)...)
		}
		return errs
	case []any:
		var items []*jsonschema.Schema
		for _, s := range all {
			if it, ok := s.Items.(*jsonschema.Schema); ok {
				items = append(items, it)
			}
		}
		var errs []error
		for i, x := range v {
			errs = append(errs, strictCheck(x, items, fmt.Sprintf("%s/%d", at, i))...)
		}
		return errs
	}
	return nil
}

// templateResources lists the resources of a template, nested ones too.
func templateResources(rs []any) []map[string]any {
	var out []map[string]any
	for _, x := range rs {
		r, ok := x.(map[string]any)
		if !ok {
			continue
		}
		out = append(out, r)
		if nested, ok := r["resources"].([]any); ok {
			out = append(out, templateResources(nested)...)
		}
	}
	return out
}

func schemaErrors(t *testing.T, a *armSchemas, raw []byte) []string {
	t.Helper()
	var tpl struct {
		Resources []any `json:"resources"`
	}
	if err := json.Unmarshal(raw, &tpl); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range templateResources(tpl.Resources) {
		for _, err := range a.validateResource(r) {
			out = append(out, fmt.Sprintf("%v %v: %v", r["type"], r["name"], err))
		}
	}
	return out
}

// TestTemplateMatchesARMSchemas validates every resource of the template
// against the published schema of its type and API version, strictly.
func TestTemplateMatchesARMSchemas(t *testing.T) {
	a := newARMSchemas(armSchemaDir(t))
	raw := []byte(read(t, templatePath))
	for _, e := range schemaErrors(t, a, raw) {
		t.Error(e)
	}
}

// TestEvaluatedTemplateMatchesARMSchemas validates the resources as Azure
// receives them, once the template is evaluated (names and values filled
// in, so their patterns and bounds apply), for the first deployment and
// for a full one.
func TestEvaluatedTemplateMatchesARMSchemas(t *testing.T) {
	a := newARMSchemas(armSchemaDir(t))
	for _, p := range []map[string]any{
		withParams(nil),
		withParams(map[string]any{"highAvailability": true, "gatewayCaPublicKey": testCA, "nodeCount": 3, "scaleFromZero": false, "shareQuotaGiB": 102400, "caKeyVault": true, "keyVaultSku": "premium", "nodeGpuExporterPort": 9400, "entraTenantId": testTenant, "entraClientId": testClient, "entraAllowedGroups": []any{testGroupA}}),
		withParams(map[string]any{"osType": "Windows", "nodeAdminPassword": "Pa55-word-for-tests", "gatewayCaPublicKey": testCA, "nodeCount": 2, "gatewayPreviousCaPublicKey": testCA}),
		withParams(map[string]any{"osType": "Windows", "nodeAdminPassword": "Pa55-word-for-tests", "gatewayCaPublicKey": testCA, "nodeCount": 2, "plainRdp": true}),
		withParams(map[string]any{"highAvailability": true, "sessionRecording": true, "recordingRetentionDays": 3650, "recordingImmutableDays": 146000}),
	} {
		ev := mustEval(t, p, defaultWorld())
		for _, r := range ev.Resources {
			for _, err := range a.validateEvaluated(r) {
				t.Errorf("%v %v: %v", r["type"], r["name"], err)
			}
		}
	}
	// A name that only its value shows to be wrong fails here, though
	// the expression passes the check of the template as written.
	broken := strings.Replace(read(t, templatePath), `"[format('pool{0}', variables('suffix'))]"`, `"[format('Pool-{0}', variables('suffix'))]"`, 1)
	ev, err := evalTemplate(broken, withParams(nil), defaultWorld())
	if err != nil {
		t.Fatal(err)
	}
	failed := false
	for _, r := range ev.resources("Microsoft.Storage/storageAccounts") {
		failed = failed || len(a.validateEvaluated(r)) > 0
	}
	if !failed {
		t.Error("storage account name Pool-... passed the evaluated check")
	}
}

// TestARMSchemaCheckFailsOnBrokenTemplate: deliberately broken copies of
// the template fail the check, each for its own reason.
func TestARMSchemaCheckFailsOnBrokenTemplate(t *testing.T) {
	a := newARMSchemas(armSchemaDir(t))
	raw := read(t, templatePath)
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"misspelt property (strict mode)", `"enableNonSslPort": false`, `"enableNonSSLPort": false`, "enableNonSSLPort: unknown property"},
		{"misspelt nested property (strict mode)", `"orchestrationMode": "Uniform",`, `"orchestrationMode": "Uniform", "overProvision": false,`, "overProvision: unknown property"},
		{"misspelt property in the scale set's extension", `'1.10', '2.1')]",
                  "autoUpgradeMinorVersion"`, `'1.10', '2.1')]",
                  "autoUpgradeMinorVersions"`, "autoUpgradeMinorVersions: unknown property"},
		{"misspelt property in the gateway's extension", `"forceUpdateTag": "[parameters('deploymentTag')]",
        "settings"`, `"forceUpdateTags": "[parameters('deploymentTag')]",
        "settings"`, "forceUpdateTags: unknown property"},
		{"value outside an enum", `"access": "Deny"`, `"access": "Refuse"`, "access"},
		{"wrong type", `"priority": 100,`, `"priority": "high",`, "priority"},
		{"unknown API version", `"apiVersion": "2023-01-01",`, `"apiVersion": "2023-01-02",`, "no schema"},
		{"misspelt Key Vault property (strict mode)", `"enableRbacAuthorization": true`, `"enableRbacAuthorisation": true`, "/properties/enableRbacAuthorisation: unknown property"},
		{"misspelt Key Vault key property (strict mode)", `"curveName": "P-256"`, `"curve": "P-256"`, "/properties/curve: unknown property"},
		{"Key Vault key curve outside the enum", `"curveName": "P-256"`, `"curveName": "P-255"`, "at '/properties/curveName': value must be one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(raw, tc.old) {
				t.Fatalf("the template has no %s", tc.old)
			}
			errs := schemaErrors(t, a, []byte(strings.Replace(raw, tc.old, tc.new, 1)))
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Errorf("broken template passed, want an error with %q; got %q", tc.want, errs)
			}
		})
	}
}
