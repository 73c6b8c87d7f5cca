package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsage(t *testing.T) {
	if code, _, errs := runCmd(); code != 2 || !strings.Contains(errs, "poolgate serve --config FILE") {
		t.Errorf("no args: %d %q", code, errs)
	}
	if code, _, errs := runCmd("frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, errs)
	}
	if code, _, errs := runCmd("serve"); code != 2 || !strings.Contains(errs, "--config FILE is required") {
		t.Errorf("serve without config: %d %q", code, errs)
	}
	if code, _, errs := runCmd("serve", "--config", "x", "extra"); code != 2 || !strings.Contains(errs, `unexpected argument "extra"`) {
		t.Errorf("serve with extra argument: %d %q", code, errs)
	}
	if code, out, _ := runCmd("version"); code != 0 || !strings.HasPrefix(out, "poolgate ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestPprofOnlyOnLoopback(t *testing.T) {
	if _, err := servePprof("0.0.0.0:0"); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("pprof on 0.0.0.0: %v", err)
	}
	stop, err := servePprof("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop()
}

func TestServeMissingConfigFile(t *testing.T) {
	code, _, errs := runCmd("serve", "--config", filepath.Join(t.TempDir(), "nope.yaml"))
	if code != 1 || !strings.Contains(errs, "reading config") || !strings.Contains(errs, "nope.yaml") {
		t.Errorf("missing file: %d %q", code, errs)
	}
}

func TestCAPubkey(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "p.yaml")
	os.WriteFile(conf, []byte("state_dir: "+dir+"/state\ndiscovery: {static: [{name: a, ssh: 'h:22'}]}\n"), 0o600)
	code, out, errs := runCmd("ca-pubkey", "--config", conf)
	if code != 0 || !strings.HasPrefix(out, "ssh-ed25519 ") || !strings.HasSuffix(out, " poolgate-user-ca\n") {
		t.Fatalf("ca-pubkey: %d %q %q", code, out, errs)
	}
	st, err := os.Stat(filepath.Join(dir, "state"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state_dir: %v %v, want mode 0700", err, st.Mode().Perm())
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
