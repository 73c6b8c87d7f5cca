package deploy

import (
	"fmt"
	"slices"
	"sort"
)

// handChecked checks, strictly but by hand, the resources whose published
// schema is not among the shared ARM schemas (../shared/arm-schemas has no
// Microsoft.KeyVault file): the property names and the values the
// template sets, as the Key Vault REST API reference (vaults and keys,
// 2023-07-01) lists them. When the schema file is added, the schema is
// used instead.
var handChecked = map[string]func(map[string]any) []error{
	"Microsoft.KeyVault/vaults@2023-07-01": func(r map[string]any) []error {
		return strictKeys(r, "", []string{"type", "apiVersion", "name", "location", "tags", "properties", "condition", "dependsOn", "copy", "comments"},
			map[string][]string{
				"properties": {"tenantId", "sku", "accessPolicies", "vaultUri", "enabledForDeployment", "enabledForDiskEncryption",
					"enabledForTemplateDeployment", "enableSoftDelete", "softDeleteRetentionInDays", "enableRbacAuthorization",
					"createMode", "enablePurgeProtection", "networkAcls", "publicNetworkAccess"},
				"properties.sku": {"family", "name"},
			})
	},
	"Microsoft.KeyVault/vaults/keys@2023-07-01": func(r map[string]any) []error {
		return strictKeys(r, "", []string{"type", "apiVersion", "name", "tags", "properties", "condition", "dependsOn", "copy", "comments"},
			map[string][]string{
				"properties":            {"kty", "keySize", "curveName", "keyOps", "attributes", "rotationPolicy", "release_policy"},
				"properties.attributes": {"enabled", "nbf", "exp", "exportable"},
			})
	},
}

// strictKeys refuses property names outside the lists: top for the
// resource, nested by dotted path.
func strictKeys(r map[string]any, _ string, top []string, nested map[string][]string) []error {
	var errs []error
	check := func(path string, m map[string]any, allowed []string) {
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !slices.Contains(allowed, k) {
				errs = append(errs, fmt.Errorf("%s: unknown property %q", path, k))
			}
		}
	}
	check("resource", r, top)
	for path, allowed := range nested {
		var cur any = r
		for _, part := range splitDots(path) {
			m, _ := cur.(map[string]any)
			cur = m[part]
		}
		if m, ok := cur.(map[string]any); ok {
			check(path, m, allowed)
		}
	}
	return errs
}

func splitDots(p string) []string {
	var out []string
	start := 0
	for i := 0; i < len(p); i++ {
		if p[i] == '.' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}
