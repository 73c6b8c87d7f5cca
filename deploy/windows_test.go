package deploy

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// Issue 17: osType Windows builds the pool from the Windows Data Science
// VM, reached over RDP (and SSH) through the gateway only; the nodes'
// OpenSSH Server trusts the gateway's user CA.

const testPreviousCA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= poolgate-user-ca-old"

func windowsParams(over map[string]any) map[string]any {
	p := withParams(map[string]any{"osType": "Windows", "nodeAdminPassword": "Pa55-word-for-tests", "gatewayCaPublicKey": testCA, "nodeCount": 2})
	for k, v := range over {
		p[k] = v
	}
	return p
}

// commandScript returns the PowerShell script a Windows node's
// CustomScriptExtension runs, decoded from its commandToExecute.
var commandScriptRE = regexp.MustCompile(`FromBase64String\('([A-Za-z0-9+/=]+)'\)`)

func windowsNodeScriptOf(t *testing.T, ev evaluated) (string, string) {
	t.Helper()
	vmss := ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]
	exts, _ := dig(vmss, "properties", "virtualMachineProfile", "extensionProfile", "extensions").([]any)
	if len(exts) != 1 {
		t.Fatalf("%d extensions on the scale set", len(exts))
	}
	p := dig(exts[0], "properties")
	if dig(p, "publisher") != "Microsoft.Compute" || dig(p, "type") != "CustomScriptExtension" || dig(p, "typeHandlerVersion") != "1.10" {
		t.Errorf("Windows nodes get extension %v %v %v, want Microsoft.Compute CustomScriptExtension 1.10", dig(p, "publisher"), dig(p, "type"), dig(p, "typeHandlerVersion"))
	}
	cmd, _ := dig(p, "protectedSettings", "commandToExecute").(string)
	m := commandScriptRE.FindStringSubmatch(cmd)
	if m == nil || !strings.HasPrefix(cmd, "powershell -NoProfile -ExecutionPolicy Bypass -Command ") {
		t.Fatalf("commandToExecute %.120q", cmd)
	}
	b, err := base64.StdEncoding.DecodeString(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b), cmd
}

func TestWindowsNodes(t *testing.T) {
	ev := mustEval(t, windowsParams(nil), defaultWorld())
	vmss := ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]
	vp := dig(vmss, "properties", "virtualMachineProfile")
	if img := dig(vp, "storageProfile", "imageReference"); dig(img, "publisher") != "microsoft-dsvm" || dig(img, "offer") != "dsvm-win-2022" {
		t.Errorf("Windows nodes use image %v, want the Windows Data Science VM", img)
	}
	os := dig(vp, "osProfile").(map[string]any)
	if os["adminPassword"] != "Pa55-word-for-tests" || dig(os, "windowsConfiguration", "provisionVMAgent") != true || os["linuxConfiguration"] != nil || os["customData"] != nil {
		t.Errorf("Windows osProfile %v", os)
	}
	script, cmd := windowsNodeScriptOf(t, ev)
	// cmd.exe's command line limit; the extension runs it through cmd.
	if len(cmd) >= 8191 {
		t.Errorf("commandToExecute is %d characters; cmd.exe takes at most 8191", len(cmd))
	}
	if script != strings.NewReplacer("__GATEWAY_CA__", testCA, "__GATEWAY_PREVIOUS_CA__", "").Replace(read(t, windowsNodeScript)) {
		t.Errorf("the Windows node runs another script than %s with the CA filled in", windowsNodeScript)
	}
	if strings.Contains(cmd, defaultWorld().StorageKey) || strings.Contains(script, "__") {
		t.Errorf("the Windows node's script holds the storage key or an unfilled placeholder")
	}

	// RDP and SSH reach the nodes from the gateways only (the RD Gateway
	// and plain RDP both open the node's 3389 from the gateway). Users
	// reach the gateway's 443 only: the RD Gateway is there.
	checkOnlyGateways(t, ev, 22, 3389)
	checkGatewayRDP(t, ev, false)

	// The gateway runs the RD Gateway under the pool's address, no plain
	// RDP, and does not scrape node_exporter (Windows nodes have none).
	cfg := gatewayAppConfig(t, gatewayConfigFile(t, ev))
	if cfg.RDP.Listen != "" || cfg.Load.MetricsPort == nil || *cfg.Load.MetricsPort != 0 {
		t.Errorf("Windows pool: rdp.listen %q, load.metrics_port %v; want none and 0", cfg.RDP.Listen, cfg.Load.MetricsPort)
	}
	checkRDGateway(t, cfg)
}

// gatewayAppConfig loads the gateway's config as poolgate does.
func gatewayAppConfig(t *testing.T, path string) app.Config {
	t.Helper()
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatalf("the gateway's config does not load: %v\n%s", err, read(t, path))
	}
	return cfg
}

// checkRDGateway: the RD Gateway is on, named by the public address's
// FQDN (the evaluator's stand-in for reference(poolgate-ip)).
func checkRDGateway(t *testing.T, cfg app.Config) {
	t.Helper()
	const fqdn = "pool-x.westeurope.cloudapp.azure.com"
	if !cfg.RDP.Gateway.Enabled || cfg.RDP.Gateway.Address != fqdn {
		t.Errorf("rdp.gateway.enabled %v, address %q; want true and %q", cfg.RDP.Gateway.Enabled, cfg.RDP.Gateway.Address, fqdn)
	}
}

// checkGatewayRDP checks that the gateway NSG lets users reach 443, and
// 3389 only when plain is set; and that the load balancer forwards 3389
// to the gateways only then.
func checkGatewayRDP(t *testing.T, ev evaluated, plain bool) {
	t.Helper()
	rules := nsgRules(t, ev, "gateway-nsg")
	if ok, rule := nsgAllows(t, rules, internetAddr, 443); !ok {
		t.Errorf("users cannot reach the gateway's 443 (rule %s)", rule)
	}
	if ok, rule := nsgAllows(t, rules, internetAddr, 3389); ok != plain {
		t.Errorf("users reach the gateway's 3389: %v (rule %s), want %v", ok, rule, plain)
	}
	lbRDP := false
	for _, r := range dig(ev.resources("Microsoft.Network/loadBalancers")[0], "properties", "loadBalancingRules").([]any) {
		fp, bp := dig(r, "properties", "frontendPort"), dig(r, "properties", "backendPort")
		if fp == int64(3389) || bp == int64(3389) {
			lbRDP = true
			if dig(r, "name") != "rdp" || fp != int64(3389) || bp != int64(3389) {
				t.Errorf("load balancer rule %v forwards %v to %v", dig(r, "name"), fp, bp)
			}
		}
	}
	if lbRDP != plain {
		t.Errorf("the load balancer forwards 3389 to the gateways: %v, want %v", lbRDP, plain)
	}
}

// plainRdp=true opens plain RDP on 3389 besides the RD Gateway.
func TestWindowsPlainRDP(t *testing.T) {
	ev := mustEval(t, windowsParams(map[string]any{"plainRdp": true}), defaultWorld())
	checkOnlyGateways(t, ev, 22, 3389)
	checkGatewayRDP(t, ev, true)
	cfg := gatewayAppConfig(t, gatewayConfigFile(t, ev))
	if cfg.RDP.Listen != "0.0.0.0:3389" {
		t.Errorf("plainRdp: rdp.listen %q, want 0.0.0.0:3389", cfg.RDP.Listen)
	}
	checkRDGateway(t, cfg)
}

// The FQDN reaches the config quoted, and only if it is a host name: a
// value with a quote, a space or a newline fails the script before it
// writes anything.
func TestGatewayScriptChecksRDGAddress(t *testing.T) {
	ev := mustEval(t, windowsParams(nil), defaultWorld())
	script := extensionScript(t, ev, "poolgate-0")
	const fqdn = "pool-x.westeurope.cloudapp.azure.com"
	if !strings.Contains(script, "rdg_address='"+fqdn+"'") || !strings.Contains(script, "plain_rdp='false'") {
		t.Fatalf("the script does not get the FQDN and plainRdp as placeholders")
	}
	for _, bad := range []string{"", "pool x.example.com", "pool\"x", "pool.example.com\nidentity:", "pool:443", "$(reboot)"} {
		vm := newScratchVM(t)
		out, _, err := vm.run(strings.Replace(script, "rdg_address='"+fqdn+"'", "rdg_address='"+strings.ReplaceAll(bad, "'", "")+"'", 1))
		if err == nil || !strings.Contains(out, "is not a host name") {
			t.Errorf("address %q: err %v, output %q; want a refusal", bad, err, out)
		}
		if _, err := os.Stat(filepath.Join(vm.root, "etc/poolgate/poolgate.yaml")); err == nil {
			t.Errorf("address %q: the config was written", bad)
		}
	}
}

// Linux pools (the default) open no RDP anywhere and write no rdp section.
func TestLinuxNodesHaveNoRDP(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA}), defaultWorld())
	for _, nsg := range []string{"nodes-nsg", "gateway-nsg"} {
		for _, r := range nsgRules(t, ev, nsg) {
			if r.allow && portIn(t, r.ports, 3389) {
				t.Errorf("%s rule %s opens 3389 on a Linux pool", nsg, r.name)
			}
		}
	}
	if ok, _ := nsgAllows(t, nsgRules(t, ev, "gateway-nsg"), internetAddr, 3389); ok {
		t.Error("the internet reaches the gateway's 3389 on a Linux pool")
	}
	path := gatewayConfigFile(t, ev)
	if strings.Contains(read(t, path), "rdp:") {
		t.Error("a Linux pool's gateway config has an rdp section")
	}
	if cfg := gatewayAppConfig(t, path); cfg.RDP.Listen != "" || cfg.RDP.Gateway.Enabled {
		t.Errorf("a Linux pool's gateway: rdp.listen %q, rdp.gateway.enabled %v; want neither", cfg.RDP.Listen, cfg.RDP.Gateway.Enabled)
	}
	checkGatewayRDP(t, ev, false)
	// plainRdp takes effect on Windows pools only.
	ev = mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA, "plainRdp": true}), defaultWorld())
	checkGatewayRDP(t, ev, false)
	if cfg := gatewayAppConfig(t, gatewayConfigFile(t, ev)); cfg.RDP.Listen != "" || cfg.RDP.Gateway.Enabled {
		t.Errorf("a Linux pool with plainRdp: rdp.listen %q, rdp.gateway.enabled %v; want neither", cfg.RDP.Listen, cfg.RDP.Gateway.Enabled)
	}
	vmss := ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]
	if img := dig(vmss, "properties", "virtualMachineProfile", "storageProfile", "imageReference"); dig(img, "offer") != "ubuntu-2204" {
		t.Errorf("Linux nodes use image %v", img)
	}
	// An image of the operator's own still wins.
	own := map[string]any{"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}
	ev = mustEval(t, withParams(map[string]any{"nodeImage": own}), defaultWorld())
	if img := dig(ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0], "properties", "virtualMachineProfile", "storageProfile", "imageReference"); dig(img, "offer") != "ubuntu-24_04-lts" {
		t.Errorf("nodeImage %v was not used: %v", own, img)
	}
}

// The Windows script: sshd reads the CA file it writes, from a line that
// is not inside the default config's closing Match block.
func TestWindowsScriptTrustsTheCA(t *testing.T) {
	ps := read(t, windowsNodeScript)
	for _, want := range []string{
		"$line = 'TrustedUserCAKeys C:/ProgramData/ssh/poolgate_user_ca.pub'",
		"(Join-Path $dir 'poolgate_user_ca.pub')",
		"$dir = Join-Path $env:ProgramData 'ssh'",
		"\"__GATEWAY_CA__`n__GATEWAY_PREVIOUS_CA__`n\"",
		"+ $text, $utf8)",     // the line goes before the existing config
		"UTF8Encoding $false", // no byte-order mark
		"Restart-Service sshd",
	} {
		if !strings.Contains(ps, want) {
			t.Errorf("%s lacks %q", windowsNodeScript, want)
		}
	}
}

// Rotation of the user CA: during the move, the nodes trust the previous
// CA line beside the new one (TrustedUserCAKeys takes several lines).
func TestNodesTrustPreviousCA(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA, "gatewayPreviousCaPublicKey": testPreviousCA}), defaultWorld())
	files := writeFiles(t, customData(t, ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]))
	if got := files["/etc/ssh/poolgate_user_ca.pub"]; got != testCA+"\n"+testPreviousCA+"\n" {
		t.Errorf("the nodes' CA file is %q, want both lines", got)
	}
	win := mustEval(t, windowsParams(map[string]any{"gatewayPreviousCaPublicKey": testPreviousCA}), defaultWorld())
	if script, _ := windowsNodeScriptOf(t, win); !strings.Contains(script, `"`+testCA+"`n"+testPreviousCA+"`n\"") {
		t.Errorf("the Windows nodes do not get both CA lines")
	}
	// Without a previous line, the CA line alone (YAML drops the empty
	// last line of the block).
	ev = mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA}), defaultWorld())
	if got := writeFiles(t, customData(t, ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]))["/etc/ssh/poolgate_user_ca.pub"]; got != testCA+"\n" {
		t.Errorf("CA file %q", got)
	}
}
