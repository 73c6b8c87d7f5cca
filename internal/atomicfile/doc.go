// Package atomicfile writes files that are either wholly there or not at
// all: the gateway's keys, certificates and fingerprint lists in state_dir.
//
// [Write] puts the data in a new temporary file beside the target (a
// fresh, unpredictable name opened exclusively, so a leftover file or a
// symlink planted at a fixed name is never written through), gives it its
// mode, syncs it to disk and renames it over the target; a crash at any
// point leaves the old file or the new one, never a half-written one.
//
//	if err := atomicfile.Write(filepath.Join(dir, "host_key"), pemBytes, 0o600); err != nil {
//		return fmt.Errorf("writing the host key: %w", err)
//	}
//
// It imports nothing of poolgate.
package atomicfile
