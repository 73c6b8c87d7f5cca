package sshgw

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestKeysTemplateRoot(t *testing.T) {
	for tmpl, want := range map[KeysTemplate]string{
		"/home/{user}/.ssh/authorized_keys":          "/home",
		"/data/poolgate-keys/{user}/authorized_keys": "/data/poolgate-keys",
		"/etc/keys/{user}":                           "/etc/keys",
		"/srv/keys/user-{user}.pub":                  "/srv/keys",
	} {
		if got := tmpl.Root(); got != want {
			t.Errorf("%s: root %s, want %s", tmpl, got, want)
		}
	}
}

// TestMissingKeyFolderSaysSo: when the folder of every user's keys is
// missing or empty (a share that did not mount), users are told the
// gateway cannot read keys, not that theirs is wrong, and the log says so
// once, with the path.
func TestMissingKeyFolderSaysSo(t *testing.T) {
	share := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	g := newTestGW(t, func(c *Config) { c.AuthorizedKeys = KeysTemplate(share + "/{user}/authorized_keys") })
	for range 2 {
		_, banner, err := dialBanner(g.addr, "alice", g.userKey)
		if err == nil {
			t.Fatal("logged in with no keys to read")
		}
		if !strings.Contains(banner, "cannot read its users' keys") || strings.Contains(banner, "is not authorized") {
			t.Fatalf("banner %q", banner)
		}
	}
	errs := g.logs.FilterMessageSnippet("authorized_keys cannot be read").FilterField(zap.String("path", share))
	if errs.Len() != 1 {
		t.Fatalf("%d log lines for the unreadable key folder, want 1 (once per change)", errs.Len())
	}
	// The share comes back: users' keys are read again, and the log says so.
	if err := os.MkdirAll(filepath.Join(share, "alice"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "alice", "authorized_keys"), []byte("# none yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, banner, _ := dialBanner(g.addr, "alice", g.userKey)
	if !strings.Contains(banner, "is not authorized") {
		t.Fatalf("with the folder back, a key not in the file: banner %q", banner)
	}
	if g.logs.FilterMessageSnippet("can be read again").Len() != 1 {
		t.Fatal("no log line for the key folder coming back")
	}
}
