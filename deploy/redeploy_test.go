package deploy

import (
	"strings"
	"testing"
)

// Defect 5 and 7: a single VM's customData cannot change after creation,
// so everything that may change between deployments (the binary's URL,
// highAvailability, rotated keys, scaleFromZero) must live elsewhere; and
// no secret may sit in customData.
func TestRedeployKeepsGatewayCustomData(t *testing.T) {
	first := mustEval(t, withParams(nil), defaultWorld())
	rotated := defaultWorld()
	rotated.StorageKey = "cm90YXRlZC1zdG9yYWdlLWtleQ=="
	rotated.RedisKey = "cm90YXRlZC1yZWRpcy1rZXk="
	rotated.Now = "20270115T080000Z"
	again := mustEval(t, withParams(map[string]any{
		"poolgateUrl":      "https://art.blob.core.windows.net/bin/poolgate?sig=NEW",
		"highAvailability": true, "scaleFromZero": false, "nodeCount": 2,
		"gatewayCaPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICA poolgate-user-ca",
	}), rotated)
	vm0 := first.resources("Microsoft.Compute/virtualMachines")[0]
	vm0again := again.resources("Microsoft.Compute/virtualMachines")[0]
	if customData(t, vm0) != customData(t, vm0again) {
		t.Errorf("the gateway VM's customData changes between deployments; Azure refuses the second one (PropertyChangeNotAllowed)")
	}
	for _, ev := range []evaluated{first, again} {
		for _, typ := range []string{"Microsoft.Compute/virtualMachines", "Microsoft.Compute/virtualMachineScaleSets"} {
			for _, r := range ev.resources(typ) {
				cd := customData(t, r)
				for name, secret := range map[string]string{"storage key": defaultWorld().StorageKey, "rotated storage key": rotated.StorageKey, "Redis key": rotated.RedisKey, "binary URL (SAS)": "sig="} {
					if strings.Contains(cd, secret) {
						t.Errorf("%s %v: customData holds the %s", typ, r["name"], name)
					}
				}
			}
		}
	}
}
