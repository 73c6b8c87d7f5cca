package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteCreatesAndReplaces(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  string // "" means no file before
		mode os.FileMode
	}{
		{"new secret", "", 0o600},
		{"new public", "", 0o644},
		{"replaces", "old contents, longer than the new", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "key")
			if tc.old != "" {
				if err := os.WriteFile(path, []byte(tc.old), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(path, []byte("new"), tc.mode); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != "new" {
				t.Fatalf("read %q, %v; want %q", got, err, "new")
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != tc.mode {
				t.Fatalf("mode %v, %v; want %v", fi.Mode().Perm(), err, tc.mode)
			}
			assertOnly(t, dir, "key")
		})
	}
}

// A file or symlink at the name a careless writer would use for its
// temporary file (path + ".tmp") is neither written through nor used.
func TestWriteIgnoresAFixedTempName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	foreign := filepath.Join(t.TempDir(), "foreign")
	if err := os.WriteFile(foreign, []byte("not yours"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(foreign, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(foreign); string(got) != "not yours" {
		t.Fatalf("the symlink's target now holds %q", got)
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key: %v %v, want a regular 0600 file", fi, err)
	}
}

func TestWriteFailureLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	// The target is a non-empty directory: the rename fails.
	path := filepath.Join(dir, "key")
	if err := os.MkdirAll(filepath.Join(path, "inside"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("x"), 0o600); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	assertOnly(t, dir, "key")
	if err := Write(filepath.Join(dir, "missing", "key"), []byte("x"), 0o600); err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
}

// assertOnly fails unless dir holds exactly the entries named.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}
