// Package deploy checks the deployment files: the ARM template, the
// cloud-init files it carries, and the systemd unit.
package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "copy the cloud-init files into azuredeploy.json and the unit into the gateway's cloud-init")

const (
	templatePath      = "azure/azuredeploy.json"
	nodeCloudInit     = "azure/node-cloud-init.yaml"
	gatewayCloudIni   = "azure/gateway-cloud-init.yaml"
	gatewayScript     = "azure/gateway-configure.sh"
	nodeScript        = "azure/node-configure.sh"
	windowsNodeScript = "azure/node-configure.ps1"
	unitPath          = "systemd/poolgate.service"
	unitInstallPath   = "/etc/systemd/system/poolgate.service"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// requireTool fails in CI, or skips elsewhere, when a checker is missing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := name + " is needed to check the deployment files; .ci/run installs it"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (skipped because CI is unset; with CI set this fails)")
	return ""
}

type template struct {
	Parameters map[string]json.RawMessage `json:"parameters"`
	Variables  map[string]json.RawMessage `json:"variables"`
	Resources  []map[string]any           `json:"resources"`
	Outputs    map[string]json.RawMessage `json:"outputs"`
}

// strings returns every string in a decoded JSON value.
func allStrings(v any, out *[]string) {
	switch v := v.(type) {
	case string:
		*out = append(*out, v)
	case []any:
		for _, x := range v {
			allStrings(x, out)
		}
	case map[string]any:
		for _, x := range v {
			allStrings(x, out)
		}
	}
}

func loadTemplate(t *testing.T) (template, []string) {
	t.Helper()
	raw := read(t, templatePath)
	var tpl template
	if err := json.Unmarshal([]byte(raw), &tpl); err != nil {
		t.Fatalf("%s does not parse: %v", templatePath, err)
	}
	var whole any
	_ = json.Unmarshal([]byte(raw), &whole)
	var strs []string
	allStrings(whole, &strs)
	return tpl, strs
}

var (
	paramRef = regexp.MustCompile(`parameters\('([^']*)'\)`)
	varRef   = regexp.MustCompile(`variables\('([^']*)'\)`)
	apiVer   = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-preview)?$`)
)

func TestTemplateReferencesAndAPIVersions(t *testing.T) {
	tpl, strs := loadTemplate(t)
	used := map[string]bool{}
	for _, s := range strs {
		if !strings.HasPrefix(s, "[") {
			continue
		}
		if err := checkExpression(s); err != nil {
			t.Errorf("expression %.80q: %v", s, err)
		}
		for _, m := range paramRef.FindAllStringSubmatch(s, -1) {
			used[m[1]] = true
			if _, ok := tpl.Parameters[m[1]]; !ok {
				t.Errorf("parameter %q is used but not defined", m[1])
			}
		}
		for _, m := range varRef.FindAllStringSubmatch(s, -1) {
			if _, ok := tpl.Variables[m[1]]; !ok {
				t.Errorf("variable %q is used but not defined", m[1])
			}
		}
	}
	for name := range tpl.Parameters {
		if !used[name] {
			t.Errorf("parameter %q is defined but never used", name)
		}
	}
	var check func(rs []map[string]any, where string)
	check = func(rs []map[string]any, where string) {
		for i, r := range rs {
			name, _ := r["name"].(string)
			id := fmt.Sprintf("%sresources[%d] (%v %s)", where, i, r["type"], name)
			if v, _ := r["apiVersion"].(string); !apiVer.MatchString(v) {
				t.Errorf("%s: apiVersion %q", id, v)
			}
			if typ, _ := r["type"].(string); typ == "" || name == "" {
				t.Errorf("%s: needs a type and a name", id)
			}
			if nested, ok := r["resources"].([]any); ok {
				var sub []map[string]any
				for _, n := range nested {
					m, _ := n.(map[string]any)
					sub = append(sub, m)
				}
				check(sub, id+".")
			}
		}
	}
	if len(tpl.Resources) == 0 {
		t.Fatal("no resources")
	}
	check(tpl.Resources, "")
	types := map[string]bool{}
	for _, r := range tpl.Resources {
		types[r["type"].(string)] = true
	}
	for _, want := range []string{"Microsoft.Compute/virtualMachineScaleSets", "Microsoft.Compute/virtualMachines", "Microsoft.Authorization/roleAssignments", "Microsoft.Network/networkSecurityGroups", "Microsoft.Network/virtualNetworks", "Microsoft.Storage/storageAccounts/fileServices/shares", "Microsoft.Network/loadBalancers", "Microsoft.Cache/redis"} {
		if !types[want] {
			t.Errorf("the template creates no %s", want)
		}
	}
}

// checkExpression is a light check of an ARM expression's syntax: it ends
// in "]", and its brackets and parentheses balance outside quoted strings.
func checkExpression(s string) error {
	if !strings.HasSuffix(s, "]") {
		return fmt.Errorf("starts with [ but does not end with ]")
	}
	var stack []rune
	inQuote := false
	for _, c := range s {
		switch {
		case c == '\'':
			inQuote = !inQuote
		case inQuote:
		case c == '(' || c == '[':
			stack = append(stack, c)
		case c == ')' || c == ']':
			want := map[rune]rune{')': '(', ']': '['}[c]
			if len(stack) == 0 || stack[len(stack)-1] != want {
				return fmt.Errorf("unbalanced %q", c)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) != 0 {
		return fmt.Errorf("unclosed quote or bracket")
	}
	return nil
}

// carried are the files the template carries verbatim, by variable.
var carried = map[string]string{"nodeCloudInit": nodeCloudInit, "gatewayCloudInit": gatewayCloudIni, "gatewayConfigure": gatewayScript, "nodeConfigure": nodeScript, "nodeConfigureWindows": windowsNodeScript}

var placeholder = regexp.MustCompile(`__[A-Z][A-Z_]*__`)

// TestTemplateCarriesCloudInit: the template's cloud-init variables are the
// files, and the customData that uses each fills every placeholder.
func TestTemplateCarriesCloudInit(t *testing.T) {
	if *update {
		updateTemplate(t)
	}
	tpl, strs := loadTemplate(t)
	for varName, path := range carried {
		var got string
		if err := json.Unmarshal(tpl.Variables[varName], &got); err != nil {
			t.Fatalf("variable %s: %v", varName, err)
		}
		file := read(t, path)
		if got != file {
			t.Errorf("variable %s differs from %s: run go test ./deploy -update", varName, path)
		}
		var expr string
		for _, s := range strs {
			if strings.HasPrefix(s, "[") {
				if e := base64Call(s, "variables('"+varName+"')"); e != "" {
					expr = e
				}
			}
		}
		if expr == "" {
			t.Errorf("no customData uses variables('%s')", varName)
			continue
		}
		want := placeholder.FindAllString(file, -1)
		slices.Sort(want)
		want = slices.Compact(want)
		for _, p := range want {
			if !strings.Contains(expr, "'"+p+"'") {
				t.Errorf("%s: placeholder %s is not filled in by the template", path, p)
			}
		}
		for _, p := range placeholder.FindAllString(expr, -1) {
			if !slices.Contains(want, p) {
				t.Errorf("the template fills %s, which %s does not have", p, path)
			}
		}
	}
}

// base64Call returns the innermost base64(...) call of an expression
// whose argument holds want (the file's variable and the replaces that
// fill it in), or "". The replaces may themselves encode a value with
// base64(...), as the gateway's sign-in values are.
func base64Call(s, want string) string {
	best := ""
	for i := strings.Index(s, "base64("); i >= 0; {
		depth, inQuote := 0, false
		for j := i + len("base64"); j < len(s); j++ {
			switch c := s[j]; {
			case c == '\'':
				inQuote = !inQuote
			case inQuote:
			case c == '(':
				depth++
			case c == ')':
				depth--
			}
			if depth == 0 {
				if call := s[i : j+1]; strings.Contains(call, want) && (best == "" || len(call) < len(best)) {
					best = call
				}
				break
			}
		}
		next := strings.Index(s[i+1:], "base64(")
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return best
}

// updateTemplate copies the cloud-init files into the template and the unit
// into the gateway's cloud-init, keeping the rest of each file as it is.
func updateTemplate(t *testing.T) {
	unit := read(t, unitPath)
	gw := read(t, gatewayCloudIni)
	start := strings.Index(gw, "  - path: "+unitInstallPath)
	body := strings.Index(gw[start:], "content: |\n") + start + len("content: |\n")
	end := body
	for end < len(gw) {
		nl := strings.IndexByte(gw[end:], '\n')
		line := gw[end : end+nl]
		if line != "" && !strings.HasPrefix(line, "      ") {
			break
		}
		end += nl + 1
	}
	var indented strings.Builder
	for _, line := range strings.SplitAfter(unit, "\n") {
		if strings.TrimSpace(line) != "" {
			indented.WriteString("      ")
		}
		indented.WriteString(line)
	}
	gw = gw[:body] + indented.String() + "\n" + strings.TrimLeft(gw[end:], "\n")
	if err := os.WriteFile(gatewayCloudIni, []byte(gw), 0o644); err != nil {
		t.Fatal(err)
	}
	raw := read(t, templatePath)
	for varName, path := range carried {
		re := regexp.MustCompile(`(?m)^(\s*"` + varName + `": )".*",?$`)
		// Without HTML escaping, so that the scripts' > and && stay
		// readable in the template.
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(read(t, path))
		b.Truncate(b.Len() - 1) // the encoder's newline
		raw = re.ReplaceAllStringFunc(raw, func(line string) string {
			m := re.FindStringSubmatch(line)
			comma := ""
			if strings.HasSuffix(line, ",") {
				comma = ","
			}
			return m[1] + b.String() + comma
		})
	}
	if err := os.WriteFile(templatePath, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeFiles returns the write_files contents of a cloud-init file by path.
func writeFiles(t *testing.T, text string) map[string]string {
	t.Helper()
	var doc struct {
		WriteFiles []struct {
			Path    string `yaml:"path"`
			Content string `yaml:"content"`
		} `yaml:"write_files"`
	}
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("cloud-init does not parse: %v", err)
	}
	out := map[string]string{}
	for _, f := range doc.WriteFiles {
		out[f.Path] = f.Content
	}
	return out
}

// cloudConfig is what these tests read of a cloud-config file.
type cloudConfig struct {
	Packages []string         `yaml:"packages"`
	Users    []any            `yaml:"users"`
	Mounts   [][]string       `yaml:"mounts"`
	RunCmd   [][]string       `yaml:"runcmd"`
	Other    map[string]any   `yaml:",inline"`
	Files    []map[string]any `yaml:"write_files"`
}

func parseCloudConfig(t *testing.T, path string) cloudConfig {
	t.Helper()
	var c cloudConfig
	if err := yaml.Unmarshal([]byte(read(t, path)), &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// TestGatewayCloudInit: the gateway VM's cloud-init installs what mounting
// the share needs, creates the poolgate user, installs the unit
// (deploy/systemd/poolgate.service) and makes it wait for the keys share;
// the config and the mount come from gateway-configure.sh.
func TestGatewayCloudInit(t *testing.T) {
	text := read(t, gatewayCloudIni)
	files := writeFiles(t, text)
	if files[unitInstallPath] != read(t, unitPath) {
		t.Errorf("the gateway's cloud-init installs another unit than %s: run go test ./deploy -update", unitPath)
	}
	c := parseCloudConfig(t, gatewayCloudIni)
	if !slices.Contains(c.Packages, "cifs-utils") {
		t.Errorf("packages %v: no cifs-utils (mount.cifs, needed for Azure Files)", c.Packages)
	}
	if len(c.Mounts) != 0 {
		t.Error("the gateway's cloud-init uses the mounts module, which runs before its packages and users exist")
	}
	users, _ := yaml.Marshal(c.Users)
	if !strings.Contains(string(users), "name: poolgate") {
		t.Error("cloud-init creates no poolgate user")
	}
	dropIn := files["/etc/systemd/system/poolgate.service.d/10-keys-share.conf"]
	if !strings.Contains(dropIn, "[Unit]\nRequiresMountsFor=/data/poolgate-keys\n") {
		t.Errorf("the unit does not wait for the keys share: %q", dropIn)
	}
	// The mount point the unit waits for is where the config looks for
	// keys and where the configure script mounts the share.
	script := read(t, gatewayScript)
	for _, want := range []string{"authorized_keys: /data/poolgate-keys/{user}", "keys=/data/poolgate-keys\n"} {
		if !strings.Contains(script, want) {
			t.Errorf("%s lacks %q", gatewayScript, want)
		}
	}
	if strings.Contains(text, "__STORAGE_KEY__") || strings.Contains(text, "__POOLGATE_URL__") || strings.Contains(text, "__STATE_REDIS__") {
		t.Error("the gateway's customData takes a secret or a value that changes between deployments")
	}
}

func TestNodeCloudInit(t *testing.T) {
	files := writeFiles(t, read(t, nodeCloudInit))
	if !strings.Contains(files["/etc/ssh/sshd_config.d/50-poolgate.conf"], "TrustedUserCAKeys /etc/ssh/poolgate_user_ca.pub") {
		t.Error("nodes do not trust the gateway's user CA")
	}
	if !strings.Contains(files["/etc/ssh/poolgate_user_ca.pub"], "__GATEWAY_CA__") {
		t.Error("the CA file does not take the gateway's CA line")
	}
	c := parseCloudConfig(t, nodeCloudInit)
	if !slices.Contains(c.Packages, "cifs-utils") {
		t.Errorf("packages %v: no cifs-utils", c.Packages)
	}
	if len(c.Mounts) != 0 {
		t.Error("the nodes' cloud-init uses the mounts module, which runs before packages are installed")
	}
	if placeholder.MatchString(strings.NewReplacer("__GATEWAY_CA__", "", "__GATEWAY_PREVIOUS_CA__", "").Replace(read(t, nodeCloudInit))) {
		t.Error("the nodes' customData takes a placeholder other than the CA lines (secrets go to node-configure.sh)")
	}
	links := files["/etc/profile.d/poolgate-share-links.sh"]
	if !strings.Contains(links, `mkdir -p "/data/share/notebooks/$USER"`) {
		t.Error("a user's notebooks folder on the share is not made at login")
	}
}

// TestCloudInitModuleOrder checks, in the installed cloud-init's default
// module list, the order that the deployment files rely on: the mounts
// module runs in the init stage, before users-groups and before packages
// are installed (final stage), which is why neither file uses it; users
// and packages are in place before runcmd's script runs (scripts-user) and
// before cloud-init reports done, which the configure scripts wait for.
func TestCloudInitModuleOrder(t *testing.T) {
	requireTool(t, "cloud-init")
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(read(t, "/etc/cloud/cloud.cfg")), &cfg); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, stage := range []string{"cloud_init_modules", "cloud_config_modules", "cloud_final_modules"} {
		mods, _ := cfg[stage].([]any)
		if len(mods) == 0 {
			t.Fatalf("/etc/cloud/cloud.cfg has no %s", stage)
		}
		for _, m := range mods {
			name, ok := m.(string)
			if !ok { // [name, frequency]
				l, _ := m.([]any)
				name, _ = l[0].(string)
			}
			order = append(order, strings.ReplaceAll(name, "-", "_"))
		}
	}
	pos := func(name string) int {
		i := slices.Index(order, name)
		if i < 0 {
			t.Fatalf("module %s is not in cloud.cfg (%v)", name, order)
		}
		return i
	}
	for _, before := range [][2]string{
		{"mounts", "users_groups"},
		{"mounts", "package_update_upgrade_install"},
		{"write_files", "users_groups"},
		{"users_groups", "scripts_user"},
		{"package_update_upgrade_install", "scripts_user"},
		{"runcmd", "scripts_user"},
	} {
		if pos(before[0]) > pos(before[1]) {
			t.Errorf("cloud-init runs %s after %s; the deployment files assume the opposite", before[0], before[1])
		}
	}
	for _, path := range []string{gatewayScript, nodeScript} {
		if !strings.Contains(read(t, path), "cloud-init status --wait") {
			t.Errorf("%s does not wait for cloud-init", path)
		}
	}
}

func TestCloudInitSchema(t *testing.T) {
	bin := requireTool(t, "cloud-init")
	for _, path := range []string{nodeCloudInit, gatewayCloudIni} {
		// Filled in as the template does (the CA line, the port).
		filled := filepath.Join(t.TempDir(), filepath.Base(path))
		text := strings.NewReplacer("__GATEWAY_CA__", testCA, "__GATEWAY_PREVIOUS_CA__", "", "__ADMIN_SSH_PORT__", "2222").Replace(read(t, path))
		if err := os.WriteFile(filled, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "schema", "-c", filled).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
			t.Errorf("cloud-init schema -c %s: %v\n%s", path, err, out)
		}
	}
	// The check does fail on a bad file.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("#cloud-config\nwrite_files: 7\n"), 0o644)
	if out, err := exec.Command(bin, "schema", "-c", bad).CombinedOutput(); err == nil {
		t.Errorf("cloud-init schema accepted a bad file: %s", out)
	}
}

func TestSystemdUnitVerifies(t *testing.T) {
	bin := requireTool(t, "systemd-analyze")
	self, err := os.Executable() // an executable to stand in for /usr/local/bin/poolgate
	if err != nil {
		t.Fatal(err)
	}
	unit := read(t, unitPath)
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/poolgate serve --config /etc/poolgate/poolgate.yaml") {
		t.Fatal("unexpected ExecStart")
	}
	for _, want := range []string{"ProtectSystem=strict", "StateDirectory=poolgate", "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_DAC_READ_SEARCH", "ProtectHome=read-only", "User=poolgate", "NoNewPrivileges=yes"} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("the unit lacks %s", want)
		}
	}
	dir := t.TempDir()
	verify := func(text string) string {
		path := filepath.Join(dir, "poolgate.service")
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "/usr/local/bin/poolgate", self)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "verify", path).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%v: %s", err, out)
		}
		return string(out)
	}
	if out := verify(unit); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %s", out)
	}
	if out := verify(strings.Replace(unit, "ProtectSystem=strict", "ProtectSystm=strict", 1)); !strings.Contains(out, "Unknown key") {
		t.Errorf("a misspelt key was not reported: %q", out)
	}
	// The gateway's drop-in, beside the unit, as systemd reads it.
	const dropInPath = "/etc/systemd/system/poolgate.service.d/10-keys-share.conf"
	dropIn := writeFiles(t, read(t, gatewayCloudIni))[dropInPath]
	writeDropIn := func(text string) {
		d := filepath.Join(dir, "poolgate.service.d")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, filepath.Base(dropInPath)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeDropIn(dropIn)
	if out := verify(unit); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify with %s: %s", dropInPath, out)
	}
	writeDropIn(strings.Replace(dropIn, "RequiresMountsFor", "RequiresMountFor", 1))
	if out := verify(unit); !strings.Contains(out, "Unknown key") {
		t.Errorf("a misspelt key in the drop-in was not reported: %q", out)
	}
}
