package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces the file at path with data and mode: it writes a
// temporary file in path's directory, syncs it and renames it into place,
// then syncs the directory so the rename itself survives a crash. The
// temporary file is removed when any step fails. The mode is set on the
// temporary file before any data is written, so a secret is never
// readable with wider permissions, whatever the umask.
func Write(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir flushes a directory's entries (the rename) to disk. Where a
// directory cannot be opened for syncing, the file is in place all the
// same; only that failure to open is ignored.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	return d.Sync()
}
