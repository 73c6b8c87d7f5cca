package httpgw

import (
	"os"
	"path/filepath"
	"testing"
)

// The self-signed private key is written through a fresh temporary file:
// a leftover or planted file at the fixed name "<key>.tmp" neither widens
// the key's mode nor receives the key.
func TestSelfSignedKeyIgnoresAFixedTempName(t *testing.T) {
	t.Run("leftover file", func(t *testing.T) {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "http_selfsigned.key")
		if err := os.WriteFile(keyFile+".tmp", []byte("half a key from a crash"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := selfSigned(dir, []string{"localhost"}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(keyFile)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("self-signed key: mode %v, %v; want 0600", fi.Mode().Perm(), err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "http_selfsigned.key")
		foreign := filepath.Join(t.TempDir(), "world-readable")
		if err := os.WriteFile(foreign, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(foreign, keyFile+".tmp"); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := selfSigned(dir, []string{"localhost"}); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(foreign); len(got) != 0 {
			t.Fatalf("the private key was written through the symlink into %s", foreign)
		}
		fi, err := os.Lstat(keyFile)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Fatalf("self-signed key: %v, %v; want a regular 0600 file", fi, err)
		}
	})
}
