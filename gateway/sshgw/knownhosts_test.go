package sshgw

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestKnownHostsReload: after a node is rebuilt, ops delete its line and
// reload; its new key is then learnt on first contact, while the other
// nodes' keys are still checked. A file that does not parse changes
// nothing.
func TestKnownHostsReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KnownHostsFile)
	kh, err := OpenKnownHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string) ssh.PublicKey {
		s, err := LoadOrCreateKey(filepath.Join(dir, name), name)
		if err != nil {
			t.Fatal(err)
		}
		return s.PublicKey()
	}
	k1, k2, rebuilt := key("k1"), key("k2"), key("k1-rebuilt")
	if err := kh.Callback("node-1")("", nil, k1); err != nil {
		t.Fatal(err)
	}
	if err := kh.Callback("node-2")("", nil, k2); err != nil {
		t.Fatal(err)
	}
	if err := kh.Callback("node-1")("", nil, rebuilt); err == nil {
		t.Fatal("node-1's new key was accepted before ops forgot the old one")
	}
	data, _ := os.ReadFile(path)
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, "node-1 ") {
			keep = append(keep, l)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(keep, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	forgotten, err := kh.Reload()
	if err != nil || len(forgotten) != 1 || forgotten[0] != "node-1" {
		t.Fatalf("reload: forgotten %q, %v; want node-1", forgotten, err)
	}
	if err := kh.Callback("node-1")("", nil, rebuilt); err != nil {
		t.Fatalf("node-1's new key after the reload: %v", err)
	}
	if err := kh.Callback("node-2")("", nil, k1); err == nil {
		t.Fatal("node-2's key is no longer checked after the reload")
	}
	if err := os.WriteFile(path, []byte("node-3 not-a-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := kh.Reload(); err == nil {
		t.Fatal("a file that does not parse was taken")
	}
	if err := kh.Callback("node-2")("", nil, k2); err != nil {
		t.Fatalf("a refused reload dropped node-2's key: %v", err)
	}
}
