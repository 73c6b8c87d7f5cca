package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckReportsEveryError: poolgate check against broken files prints
// every problem of a file at once, each as file:line: key: problem, and
// exits 1.
func TestCheckReportsEveryError(t *testing.T) {
	const nodes = "discovery:\n  static:\n    - {name: n1, ssh: '10.0.0.4:22'}\n"
	for _, tt := range []struct {
		name string
		doc  string
		want []string // each line of stderr, after "FILE:"
	}{
		{"tab in indentation", "ssh:\n\tlisten: 0.0.0.0:22\n" + nodes, []string{
			"2: tab in indentation at line 2; use spaces",
		}},
		{"tabs on two lines", "ssh:\n\tlisten: 0.0.0.0:22\nhealth:\n  \tinterval: 2s\n" + nodes, []string{
			"2: tab in indentation at line 2; use spaces",
			"4: tab in indentation at line 4; use spaces",
		}},
		{"load.max as a percentage", "load:\n  max: 90\n" + nodes, []string{
			"2: load.max: 90 is more than 1: it is a fraction (0.9 = 90% of CPU run queue per CPU, memory or GPU); write 0.9",
		}},
		{"value errors carry their line", "state_dir: /x\nssh:\n  listen: nope\n  max_auth_tries: -1\n" + nodes, []string{
			`3: ssh.listen: "nope" is not host:port: address nope: missing port in address`,
			"4: ssh.max_auth_tries: must not be negative, got -1",
		}},
		{"type, unknown-key and value errors together", "health:\n  interval: soon\n  bogus: 1\nbalancer:\n  affinity_grace: -1m\n" + nodes, []string{
			`2: health.interval: "soon" is not a duration (use a number with a unit: 500ms, 2s, 30m, 1h)`,
			"3: health.bogus: unknown key (known here: fall, interval, repin_after, rise, timeout)",
			"5: balancer.affinity_grace: must not be negative, got -1m0s",
		}},
		{"a missing key is reported at its section", "admin:\n  listen: 0.0.0.0:9090\n" + nodes, []string{
			"1: admin.token_file: required when listen (0.0.0.0:9090) is not a loopback address: the admin API can drain nodes",
		}},
		{"list items", "discovery:\n  static:\n    - {name: n1, ssh: '10.0.0.4'}\n    - name: n1\n      ssh: 10.0.0.5:22\n      weight: -1\n", []string{
			`3: discovery.static[0].ssh: "10.0.0.4" is not host:port: address 10.0.0.4: missing port in address`,
			`4: discovery.static[1].name: "n1" is already used by static[0]`,
			"6: discovery.static[1].weight: must not be negative, got -1",
		}},
		{"azure section", "discovery:\n  azure:\n    subscription_id: nope\n    resource_group: rg\n    scale_set: pool\n    ssh_port: 70000\n", []string{
			`3: discovery.azure.subscription_id: "nope" is not a subscription ID (a GUID such as 00000000-0000-0000-0000-000000000000)`,
			"6: discovery.azure.ssh_port: must be from 1 to 65535, got 70000",
		}},
		{"syntax error", "ssh: {\n", []string{
			"1: did not find expected node content",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "p.yaml")
			if err := os.WriteFile(file, []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errs := runCmd("check", "--config", file)
			want := make([]string, len(tt.want))
			for i, w := range tt.want {
				want[i] = file + ":" + w
			}
			if code != 1 || out != "" || errs != strings.Join(want, "\n")+"\n" {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 1 and stderr:\n%s", code, out, errs, strings.Join(want, "\n"))
			}
		})
	}
}

// TestCheckOK: a good file gives exit 0 and one line saying what would be
// served; a likely mistake (http.listen with no node's http address) is a
// warning, not an error: the HTTP front end also serves the sign-in pages.
func TestCheckOK(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	doc := "state_dir: " + dir + "/state\nssh:\n  listen: 127.0.0.1:2222\n  password_passthrough: true\nhttp:\n  listen: 127.0.0.1:8443\ndiscovery:\n  static:\n    - {name: n1, ssh: '10.0.0.4:22'}\n    - {name: n2, ssh: '10.0.0.5:22'}\n"
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd("check", "--config", file)
	wantOut := "ok: " + file + ": ssh 127.0.0.1:2222, http 127.0.0.1:8443 (tls), admin 127.0.0.1:9090; 2 static nodes; features: keys from /home/{user}/.ssh/authorized_keys, password passthrough, placement by load (max 0.9); state_dir " + dir + "/state\n"
	wantErr := file + ":6: warning: http.listen: set, but no node in discovery.static has an http address: browsers would get 503 (give the nodes http: HOST:PORT, or remove http.listen)\n"
	if code != 0 || out != wantOut || errs != wantErr {
		t.Errorf("exit %d\nstdout %q\nwant   %q\nstderr %q\nwant   %q", code, out, wantOut, errs, wantErr)
	}
}

// TestCheckCreatesNothing: check reads the file and nothing else: no
// state_dir, no host key, no CA key, even where ca-pubkey or serve would
// create them; an existing state_dir stays empty.
func TestCheckCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.Mkdir(existing, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, stateDir := range []string{filepath.Join(dir, "absent"), existing} {
		file := filepath.Join(dir, "p.yaml")
		doc := "state_dir: " + stateDir + "\nssh:\n  listen: 127.0.0.1:0\nhttp:\n  listen: 127.0.0.1:0\n  tls: true\nrdp:\n  listen: 127.0.0.1:0\nstate:\n  redis: redis://127.0.0.1:1/0\nca:\n  key_vault:\n    url: https://pool-kv.vault.azure.net/\n    key: ca\ndiscovery:\n  static:\n    - {name: n1, ssh: '127.0.0.1:1', http: '127.0.0.1:2'}\n"
		if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errs := runCmd("check", "--config", file)
		if code != 0 || !strings.HasPrefix(out, "ok: ") || errs != "" {
			t.Fatalf("check: %d %q %q", code, out, errs)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != "existing p.yaml" {
			t.Errorf("state_dir %s: check left %v in %s, want only existing and p.yaml", stateDir, names, dir)
		}
		if left, _ := os.ReadDir(existing); len(left) != 0 {
			t.Errorf("state_dir %s: check wrote %d files into the existing state_dir", stateDir, len(left))
		}
	}
}

func TestCheckUsage(t *testing.T) {
	if code, _, errs := runCmd("check"); code != 2 || !strings.Contains(errs, "--config FILE is required") {
		t.Errorf("check without config: %d %q", code, errs)
	}
	for _, cmd := range []string{"check", "drain", "pin", "unpin", "version"} {
		code, _, errs := runCmd(cmd, "--help")
		if code != 0 || !strings.HasPrefix(errs, "Usage: poolgate "+cmd) || strings.Count(errs, "\n") < 3 {
			t.Errorf("%s --help: %d %q", cmd, code, errs)
		}
	}
}
