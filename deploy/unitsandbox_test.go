package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
)

// serviceSettings is the [Service] section of a unit: each key's values in
// order (a key given twice, or a list, has several).
func serviceSettings(unit string) map[string][]string {
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			out[k] = append(out[k], strings.Fields(v)...)
		}
	}
	return out
}

// documentedKeys is the authorized_keys template the README's quick start
// and the config's default use, checked to be the same.
func documentedKeys(t *testing.T) string {
	t.Helper()
	def := string(app.Config{}.WithDefaults().SSH.AuthorizedKeys)
	if readme := read(t, "../README.md"); !strings.Contains(readme, def) {
		t.Fatalf("the README does not mention the default authorized_keys %s", def)
	}
	return def
}

// TestUnitGrantsReadingDocumentedKeys reads the unit's sandbox settings
// that decide whether poolgate can read /home/{user}/.ssh/authorized_keys
// (usually in a 0700 home owned by the user): the homes must be visible
// (ProtectHome read-only or no, nothing hiding /home), and the unprivileged
// user needs CAP_DAC_READ_SEARCH, ambient and in the bounding set.
func TestUnitGrantsReadingDocumentedKeys(t *testing.T) {
	keys := documentedKeys(t)
	if !strings.HasPrefix(keys, "/home/") {
		t.Skipf("the documented keys %s are not under /home", keys)
	}
	s := serviceSettings(read(t, unitPath))
	if ph := s["ProtectHome"]; !slices.Equal(ph, []string{"read-only"}) && !slices.Equal(ph, []string{"no"}) {
		t.Errorf("ProtectHome=%s hides %s; want read-only", strings.Join(ph, " "), keys)
	}
	for _, k := range []string{"InaccessiblePaths", "TemporaryFileSystem"} {
		for _, p := range s[k] {
			p, _, _ = strings.Cut(strings.TrimLeft(p, "-+"), ":")
			if strings.HasPrefix("/home/", strings.TrimSuffix(p, "/")+"/") || strings.HasPrefix(p, "/home/") {
				t.Errorf("%s=%s hides the users' keys", k, p)
			}
		}
	}
	if u := s["User"]; len(u) == 0 || u[0] == "root" {
		t.Fatalf("User=%v: the unit should run as an unprivileged user", u)
	}
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if !slices.Contains(s[k], "CAP_DAC_READ_SEARCH") {
			t.Errorf("%s=%s: without CAP_DAC_READ_SEARCH the poolgate user cannot read a key in a 0700 home", k, strings.Join(s[k], " "))
		}
	}
	for _, p := range []string{"/etc/shadow", "/root"} {
		if !slices.Contains(s["InaccessiblePaths"], "-"+p) && !slices.Contains(s["InaccessiblePaths"], p) {
			t.Errorf("CAP_DAC_READ_SEARCH opens %s too: hide it with InaccessiblePaths", p)
		}
	}
}

// TestUnitSandboxReadsKeys runs a reader under the unit's settings that
// decide the access: systemd-run cannot run here (tests run in a container
// without systemd as PID 1, so there is no manager to start a transient
// unit), so the settings are applied by hand, as systemd would: a mount
// namespace with the homes read-only (ProtectHome=read-only) or hidden by
// an empty tmpfs (yes), then an unprivileged uid with the unit's ambient
// and bounding capabilities and no_new_privs. A key in a 0700 home of
// another uid must be readable and not writable; the previous unit
// (ProtectHome=yes, no CAP_DAC_READ_SEARCH) must fail, so that the test
// shows it decides something.
func TestUnitSandboxReadsKeys(t *testing.T) {
	setpriv, unshare := requireTool(t, "setpriv"), requireTool(t, "unshare")
	if os.Geteuid() != 0 {
		t.Skip("needs root to change uid and mount (CI runs as root)")
	}
	home := t.TempDir()
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(home, "alice", ".ssh", "authorized_keys")
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("ssh-ed25519 AAAA alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(home, "alice"), filepath.Dir(key), key} {
		if err := os.Chown(p, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, map[bool]os.FileMode{true: 0o600, false: 0o700}[p == key]); err != nil {
			t.Fatal(err)
		}
	}
	// run runs script (as the unit's user, with $KEY set) under the unit's
	// settings; nobody (65534) stands in for the poolgate user.
	run := func(unit, script string) (string, error) {
		s := serviceSettings(unit)
		var mount string
		switch ph := strings.Join(s["ProtectHome"], ""); ph {
		case "read-only":
			mount = `mount --bind "$HOMES" "$HOMES" && mount -o remount,bind,ro "$HOMES" "$HOMES" && `
		case "yes", "tmpfs":
			mount = `mount -t tmpfs -o ro,mode=0755 none "$HOMES" && `
		case "", "no":
		default:
			t.Fatalf("ProtectHome=%s: not emulated", ph)
		}
		var caps []string
		for _, c := range s["AmbientCapabilities"] {
			if slices.Contains(s["CapabilityBoundingSet"], c) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
		priv := []string{setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups"}
		if slices.Equal(s["NoNewPrivileges"], []string{"yes"}) {
			priv = append(priv, "--no-new-privs")
		}
		if len(caps) > 0 {
			c := strings.Join(caps, ",")
			priv = append(priv, "--inh-caps", c, "--ambient-caps", c, "--bounding-set", "-all,"+c)
		} else {
			priv = append(priv, "--bounding-set", "-all")
		}
		priv = append(priv, "sh", "-c", script)
		cmd := exec.Command(unshare, append([]string{"-m", "sh", "-c", mount + `exec "$@"`, "sh"}, priv...)...)
		cmd.Env = append(os.Environ(), "HOMES="+home, "KEY="+key)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	unit := read(t, unitPath)
	if out, err := run(unit, `cat "$KEY"`); err != nil || out != "ssh-ed25519 AAAA alice\n" {
		t.Errorf("the unit's sandbox cannot read a key in a 0700 home: %v: %s", err, out)
	}
	if out, err := run(unit, `echo x >> "$KEY"`); err == nil {
		t.Errorf("the unit's sandbox may write a user's authorized_keys: %s", out)
	}
	old := strings.NewReplacer("ProtectHome=read-only", "ProtectHome=yes", " CAP_DAC_READ_SEARCH", "").Replace(unit)
	if out, err := run(old, `cat "$KEY"`); err == nil {
		t.Errorf("the previous unit's sandbox read the key (the test proves nothing): %s", out)
	}
	noCap := strings.ReplaceAll(unit, " CAP_DAC_READ_SEARCH", "")
	if out, err := run(noCap, `cat "$KEY"`); err == nil {
		t.Errorf("without CAP_DAC_READ_SEARCH the key was read (the test proves nothing): %s", out)
	}
}

// TestUnitFollowsUpgrade: after SIGUSR2 the new process is the service's
// main one; systemd hears so only from a notify unit that accepts
// messages from any of its processes.
func TestUnitFollowsUpgrade(t *testing.T) {
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"\nType=notify\n", "\nNotifyAccess=all\n", "\nExecReload=/bin/kill -HUP $MAINPID\n", "systemctl kill -s USR2 --kill-whom=main poolgate"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
}
