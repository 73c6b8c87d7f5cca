package deploy

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The configure scripts run on the VMs through the CustomScript
// extension. These tests take the script exactly as the evaluated
// template hands it to the extension, and run it with /bin/sh against a
// scratch root, with stand-ins for what would touch the machine (mount,
// systemctl, curl, cloud-init), which log what they were asked to do.

const stubs = `
log() { echo "$(basename "$0") $*" >>"$STUB_LOG"; }
case "$(basename "$0")" in
cloud-init|mount.cifs) exit 0 ;;
chgrp|sss_cache) log "$@" ;;
getent) [ "$1 $2" = "group poolgate" ] && echo "poolgate:x:998:" ; exit 0 ;;
mountpoint) [ -e "$2/.mounted" ] ;;
mount) log "$@"; [ -z "${STUB_MOUNT_FAIL:-}" ] || exit 32; touch "$1/.mounted" ;;
umount) log "$@"; for a; do :; done; rm -f "$a/.mounted" ;;
apt-get)
	log "$@"
	[ -z "${STUB_APT_FAIL:-}" ] || exit 100
	if [ "$1" = install ] || [ "$2" = install ] || [ "$3" = install ]; then
		mkdir -p "$POOLGATE_CONFIGURE_ROOT/usr/bin"
		printf '#!/bin/sh\n' >"$POOLGATE_CONFIGURE_ROOT/usr/bin/prometheus-node-exporter"
		chmod 0755 "$POOLGATE_CONFIGURE_ROOT/usr/bin/prometheus-node-exporter"
	fi ;;
curl)
	log "$@"
	[ -z "${STUB_CURL_FAIL:-}" ] || exit 22
	while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
	printf '#!/bin/sh\necho poolgate\n' >"$out" ;;
systemctl)
	log "$@"
	case "$1" in
	is-active) [ -z "${STUB_INACTIVE:-}" ] ;;
	list-unit-files) [ -n "${STUB_HUB:-}" ] && echo "$STUB_HUB enabled enabled" ; exit 0 ;;
	show) echo "{ path=/anaconda/bin/jupyterhub ; argv[]=/anaconda/bin/jupyterhub -f /etc/jupyterhub/jupyterhub_config.py --port 8000 ; ignore_errors=no }" ;;
	esac ;;
esac
`

type scratchVM struct {
	t    *testing.T
	root string
	bin  string
	env  []string
}

func newScratchVM(t *testing.T) *scratchVM {
	t.Helper()
	dir := t.TempDir()
	vm := &scratchVM{t: t, root: filepath.Join(dir, "root"), bin: filepath.Join(dir, "bin")}
	for _, d := range []string{vm.root, vm.bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub := filepath.Join(dir, "stub")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"+stubs), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cloud-init", "mount.cifs", "getent", "mountpoint", "mount", "umount", "curl", "systemctl", "chgrp", "apt-get", "sss_cache"} {
		if err := os.Symlink(stub, filepath.Join(vm.bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	return vm
}

func (vm *scratchVM) logPath() string { return filepath.Join(vm.root, "..", "calls.log") }

// run runs the script and returns its stderr and the calls it made.
func (vm *scratchVM) run(script string, env ...string) (string, []string, error) {
	vm.t.Helper()
	_ = os.Remove(vm.logPath())
	path := filepath.Join(vm.root, "..", "script.sh")
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		vm.t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", path)
	cmd.Env = append([]string{"PATH=" + vm.bin + ":/usr/bin:/bin", "POOLGATE_CONFIGURE_ROOT=" + vm.root, "STUB_LOG=" + vm.logPath(), "POOLGATE_CONFIGURE_SETTLE=0"}, append(vm.env, env...)...)
	out, err := cmd.CombinedOutput()
	calls, _ := os.ReadFile(vm.logPath())
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
		if l != "" {
			lines = append(lines, strings.ReplaceAll(l, vm.root, ""))
		}
	}
	return string(out), lines, err
}

func (vm *scratchVM) file(path string) (string, os.FileMode) {
	vm.t.Helper()
	p := filepath.Join(vm.root, path)
	b, err := os.ReadFile(p)
	if err != nil {
		vm.t.Fatalf("the script wrote no %s: %v", path, err)
	}
	st, _ := os.Stat(p)
	return string(b), st.Mode().Perm()
}

func called(calls []string, prefix string) bool {
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

// extensionScript is the script an evaluated template hands to the
// CustomScript extension of the named resource (a gateway VM's extension,
// or the scale set's).
func extensionScript(t *testing.T, ev evaluated, vmName string) string {
	t.Helper()
	var enc any
	for _, r := range ev.resources("Microsoft.Compute/virtualMachines/extensions") {
		if r["name"] == vmName+"/configure" {
			enc = dig(r, "properties", "protectedSettings", "script")
		}
	}
	if vmName == "" {
		vmss := ev.resources("Microsoft.Compute/virtualMachineScaleSets")[0]
		exts, _ := dig(vmss, "properties", "virtualMachineProfile", "extensionProfile", "extensions").([]any)
		for _, e := range exts {
			if dig(e, "name") == "configure" {
				enc = dig(e, "properties", "protectedSettings", "script")
			}
		}
	}
	s, _ := enc.(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || s == "" {
		t.Fatalf("no configure script for %q (protectedSettings.script %.40q): %v", vmName, s, err)
	}
	return string(b)
}

// gatewayConfigFile runs the first gateway's configure script and returns
// the path of the poolgate.yaml it wrote.
func gatewayConfigFile(t *testing.T, ev evaluated) string {
	t.Helper()
	vm := newScratchVM(t)
	if out, _, err := vm.run(extensionScript(t, ev, "poolgate-0")); err != nil {
		t.Fatalf("gateway configure script: %v\n%s", err, out)
	}
	return filepath.Join(vm.root, "etc/poolgate/poolgate.yaml")
}

func TestGatewayConfigureScript(t *testing.T) {
	world := defaultWorld()
	first := mustEval(t, withParams(map[string]any{"highAvailability": true}), world)
	script := extensionScript(t, first, "poolgate-0")
	if script != extensionScript(t, first, "poolgate-1") {
		t.Error("the two gateways get different configure scripts")
	}
	vm := newScratchVM(t)
	out, calls, err := vm.run(script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cred, mode := vm.file("etc/smbcredentials/" + keysAccount(t, first) + ".cred")
	if mode != 0o600 || !strings.Contains(cred, "password="+world.StorageKey+"\n") {
		t.Errorf("credentials file mode %v:\n%s", mode, cred)
	}
	if _, mode := vm.file("etc/poolgate/poolgate.yaml"); mode != 0o640 || !called(calls, "chgrp 998 /etc/poolgate/poolgate.yaml") {
		t.Errorf("the config (with the Redis key) is mode %v, group set: %v; want 0640 root:poolgate", mode, called(calls, "chgrp 998"))
	}
	if _, mode := vm.file("etc/poolgate/binary-url"); mode != 0o600 {
		t.Errorf("the binary's URL (a SAS token) is mode %v", mode)
	}
	fstab, _ := vm.file("etc/fstab")
	if !strings.Contains(fstab, " /data/poolgate-keys cifs ") || !strings.Contains(fstab, ",gid=998,") || !strings.Contains(fstab, "/poolgate-keys ") {
		t.Errorf("fstab: want the keys share on /data/poolgate-keys with poolgate's numeric gid:\n%s", fstab)
	}
	for _, want := range []string{"mount /data/poolgate-keys", "curl ", "systemctl restart poolgate"} {
		if !called(calls, want) {
			t.Errorf("first run: no %q in %q", want, calls)
		}
	}
	if _, err := os.Stat(filepath.Join(vm.root, "usr/local/bin/poolgate")); err != nil {
		t.Error("no binary installed")
	}

	// The same deployment again changes nothing and cuts no session.
	out, calls, err = vm.run(script)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	if called(calls, "systemctl restart") || called(calls, "curl") || called(calls, "umount") {
		t.Errorf("an unchanged deployment restarted or downloaded: %q", calls)
	}

	// A new URL installs the new binary; a rotated storage key remounts.
	rotated := world
	rotated.StorageKey = "bmV3LXN0b3JhZ2Uta2V5/+=="
	again := mustEval(t, withParams(map[string]any{"highAvailability": true, "poolgateUrl": "https://art.blob.core.windows.net/bin/poolgate?sig=NEW"}), rotated)
	out, calls, err = vm.run(extensionScript(t, again, "poolgate-0"))
	if err != nil {
		t.Fatalf("redeploy: %v\n%s", err, out)
	}
	for _, want := range []string{"curl -fsSL --retry 5 -o /usr/local/bin/poolgate.new https://art.blob.core.windows.net/bin/poolgate?sig=NEW", "umount /data/poolgate-keys", "mount /data/poolgate-keys", "systemctl restart poolgate"} {
		if !called(calls, want) {
			t.Errorf("redeploy: no %q in %q", want, calls)
		}
	}
	if cred, _ := vm.file("etc/smbcredentials/" + keysAccount(t, again) + ".cred"); !strings.Contains(cred, rotated.StorageKey) {
		t.Error("the rotated key was not written")
	}
}

// Defect 2: when the keys share does not mount, the deployment fails
// and says so, rather than leaving a gateway that refuses every key.
func TestGatewayConfigureFailsLoudly(t *testing.T) {
	ev := mustEval(t, withParams(nil), defaultWorld())
	script := extensionScript(t, ev, "poolgate-0")
	for _, tc := range []struct {
		name, env, want string
		noCIFS          bool
	}{
		{"share does not mount", "STUB_MOUNT_FAIL=1", "did not mount on /data/poolgate-keys", false},
		{"binary does not download", "STUB_CURL_FAIL=1", "could not download poolgate", false},
		{"no cifs-utils", "", "mount.cifs is missing", true},
		{"poolgate does not stay up", "STUB_INACTIVE=1", "poolgate did not start or does not stay up", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := newScratchVM(t)
			if tc.noCIFS {
				_ = os.Remove(filepath.Join(vm.bin, "mount.cifs"))
			}
			out, calls, err := vm.run(script, tc.env)
			if err == nil || !strings.Contains(out, "poolgate-configure: ") || !strings.Contains(out, tc.want) {
				t.Errorf("err %v, output %q, want a failure saying %q", err, out, tc.want)
			}
			if tc.env != "STUB_INACTIVE=1" && called(calls, "systemctl restart poolgate") {
				t.Errorf("poolgate was started anyway: %q", calls)
			}
		})
	}
}

func TestNodeConfigureScript(t *testing.T) {
	world := defaultWorld()
	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA, "nodeCount": 1}), world)
	script := extensionScript(t, ev, "")
	vm := newScratchVM(t)
	hubConf := filepath.Join(vm.root, "etc/jupyterhub/jupyterhub_config.py")
	_ = os.MkdirAll(filepath.Dir(hubConf), 0o755)
	_ = os.WriteFile(hubConf, []byte("c.Spawner.notebook_dir = '~/notebooks'\n"), 0o644)
	for run := 0; run < 2; run++ {
		out, calls, err := vm.run(script, "STUB_HUB=jupyterhub.service")
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
		if restarted := called(calls, "systemctl try-restart jupyterhub.service"); restarted != (run == 0) {
			t.Errorf("run %d: hub restarted = %v (%q)", run, restarted, calls)
		}
	}
	cred, mode := vm.file("etc/smbcredentials/" + storageAccount(t, ev) + ".cred")
	if mode != 0o600 || !strings.Contains(cred, world.StorageKey) {
		t.Errorf("credentials mode %v", mode)
	}
	secret, mode := vm.file("etc/jupyterhub/poolgate_cookie_secret")
	if mode != 0o600 || strings.TrimSpace(secret) != baseParams()["jupyterhubCookieSecret"] {
		t.Errorf("cookie secret mode %v: %q", mode, secret)
	}
	conf, _ := vm.file("etc/jupyterhub/jupyterhub_config.py")
	if strings.Count(conf, "cookie_secret_file") != 1 {
		t.Errorf("hub config:\n%s", conf)
	}
	// Defect 6: the share is writable by every pool user, not root alone.
	fstab, _ := vm.file("etc/fstab")
	if !strings.Contains(fstab, " /data/share cifs ") || !strings.Contains(fstab, "dir_mode=0777") || !strings.Contains(fstab, "file_mode=0666") || !strings.Contains(fstab, "nosuid") {
		t.Errorf("fstab: want the share writable by every user (0777/0666, nosuid):\n%s", fstab)
	}
	if _, err := os.Stat(filepath.Join(vm.root, "data/share/notebooks")); err != nil {
		t.Errorf("no notebooks folder on the share: %v", err)
	}
}

// A node image without a JupyterHub unit, or with its config elsewhere,
// still gets its share; the script says what it could not do.
func TestNodeConfigureHubVariants(t *testing.T) {
	ev := mustEval(t, withParams(map[string]any{"gatewayCaPublicKey": testCA}), defaultWorld())
	script := extensionScript(t, ev, "")
	vm := newScratchVM(t)
	out, calls, err := vm.run(script)
	if err != nil || !strings.Contains(out, "no JupyterHub unit on this image") || !called(calls, "mount /data/share") {
		t.Errorf("no hub: err %v, output %q, calls %q", err, out, calls)
	}
	out, _, err = vm.run(script, "STUB_HUB=jupyterhub.service")
	if err != nil || !strings.Contains(out, "has no config at /etc/jupyterhub/jupyterhub_config.py") {
		t.Errorf("hub without its config: err %v, output %q", err, out)
	}
}

// storageAccount is the account of the users' share, whose key the nodes
// hold.
func storageAccount(t *testing.T, ev evaluated) string {
	t.Helper()
	users, _ := shareAccounts(t, ev)
	return users
}

// keysAccount is the account of the keys share, whose key only the
// gateways hold.
func keysAccount(t *testing.T, ev evaluated) string {
	t.Helper()
	_, keys := shareAccounts(t, ev)
	return keys
}
