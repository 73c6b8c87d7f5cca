package sshgw

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenKnownHosts feeds any file to the node host key store's reader.
func FuzzOpenKnownHosts(f *testing.F) {
	f.Add([]byte("node-1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"))
	f.Add([]byte("# comment\n\nnode-2\n"))
	f.Add([]byte("node-3 ssh-rsa !!!\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "node_host_keys")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := OpenKnownHosts(path)
		if err == nil && p == nil {
			t.Fatal("no store and no error")
		}
	})
}
