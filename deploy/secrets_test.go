package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 15, item 8: where the deployment's secrets go, and who can read
// them.

// storageAccounts returns the evaluated storage accounts' names: the
// users' share's account and the keys share's account.
func shareAccounts(t *testing.T, ev evaluated) (users, keys string) {
	t.Helper()
	for _, s := range ev.resources("Microsoft.Storage/storageAccounts/fileServices/shares") {
		name := s["name"].(string)
		account, _, _ := strings.Cut(name, "/")
		if strings.HasSuffix(name, "/poolgate-keys") {
			keys = account
		} else {
			users = account
		}
	}
	if users == "" || keys == "" {
		t.Fatalf("want the users' share and the keys share; shares %v", ev.resources("Microsoft.Storage/storageAccounts/fileServices/shares"))
	}
	return users, keys
}

// A storage account key opens every share of its account. The nodes hold
// the key of the users' share (root on any node can read it), so the
// share with the users' SSH public keys must be in another account whose
// key no node receives: else root on a node mounts the keys share and
// adds a key for anyone.
func TestNodesHoldNoKeyOfTheKeysShare(t *testing.T) {
	ev := mustEval(t, withParams(nil), defaultWorld())
	users, keys := shareAccounts(t, ev)
	if users == keys {
		t.Fatalf("the keys share is in the users' storage account %s, whose key every node holds", users)
	}
	world := defaultWorld()
	world.StorageKeys = map[string]string{users: "dXNlcnMtc2hhcmUta2V5==", keys: "a2V5cy1zaGFyZS1rZXk=="}
	for _, p := range []map[string]any{withParams(map[string]any{"gatewayCaPublicKey": testCA, "nodeCount": 2}), withParams(map[string]any{"gatewayCaPublicKey": testCA, "highAvailability": true})} {
		ev := mustEval(t, p, world)
		vmss := ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]
		node := extensionScript(t, ev, "") + customData(t, vmss)
		if strings.Contains(node, world.StorageKeys[keys]) || strings.Contains(node, keys) {
			t.Errorf("the nodes' set-up holds the keys account's key or name")
		}
		if !strings.Contains(node, world.StorageKeys[users]) {
			t.Errorf("the nodes do not get the users' share key")
		}
		gw := extensionScript(t, ev, "poolgate-0")
		if !strings.Contains(gw, "password="+world.StorageKeys[keys]+"\n") || !strings.Contains(gw, "//"+keys+".file.core.windows.net/poolgate-keys ") {
			t.Errorf("the gateway does not mount the keys share of account %s with its key", keys)
		}
		if strings.Contains(gw, world.StorageKeys[users]) {
			t.Errorf("the gateway holds the users' share key, which it does not need")
		}
	}
}

// poolgate.yaml (the Redis key; with Key Vault, the vault) is readable by
// root and the poolgate user only, whatever mode an earlier version or a
// hand edit left on it, and even when its contents do not change.
func TestGatewayConfigModeRepaired(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"highAvailability": true}), defaultWorld())
	script := extensionScript(t, ev, "poolgate-0")
	vm := newScratchVM(t)
	if out, _, err := vm.run(script); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, f := range []string{"etc/poolgate/poolgate.yaml", "etc/poolgate/binary-url"} {
		if err := os.Chmod(filepath.Join(vm.root, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, calls, err := vm.run(script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, mode := vm.file("etc/poolgate/poolgate.yaml"); mode != 0o640 || !called(calls, "chgrp 998 /etc/poolgate/poolgate.yaml") {
		t.Errorf("an unchanged poolgate.yaml left at 0644 is mode %v after a deployment; want 0640 root:poolgate", mode)
	}
	if _, mode := vm.file("etc/poolgate/binary-url"); mode != 0o600 {
		t.Errorf("an unchanged binary-url left at 0644 is mode %v; want 0600", mode)
	}
	if called(calls, "systemctl restart") {
		t.Errorf("repairing modes restarted poolgate: %q", calls)
	}
}

// A gateway deployed when the keys share was in the users' account keeps
// no credentials file for that account: the next deployment removes it.
func TestGatewayDropsOldCredentials(t *testing.T) {
	ev := mustEval(t, withParams(nil), defaultWorld())
	users, keys := shareAccounts(t, ev)
	vm := newScratchVM(t)
	old := filepath.Join(vm.root, "etc/smbcredentials", users+".cred")
	_ = os.MkdirAll(filepath.Dir(old), 0o700)
	if err := os.WriteFile(old, []byte("username="+users+"\npassword=old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := vm.run(extensionScript(t, ev, "poolgate-0")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := os.Stat(old); err == nil {
		t.Errorf("the old credentials file %s.cred (the users' share key) is still on the gateway", users)
	}
	vm.file("etc/smbcredentials/" + keys + ".cred")
}
