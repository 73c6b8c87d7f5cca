package sshgw

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// ErrKeysUnavailable means the place that holds every user's
// authorized_keys (the folder above {user} in the template) cannot be
// read: missing, not a folder, or empty, as a network share that failed
// to mount leaves its mount point. No key can be checked then.
var ErrKeysUnavailable = errors.New("the users' authorized_keys cannot be read")

const msgKeysUnavailable = "poolgate: the gateway cannot read its users' keys right now, so no key can be accepted; please tell your administrator.\n"

// Root returns the folder that holds every user's file: the template's
// path up to the element that contains {user} (/home for
// /home/{user}/.ssh/authorized_keys).
func (t KeysTemplate) Root() string {
	s := string(t)
	i := strings.Index(s, "{user}")
	if i < 0 {
		return path.Dir(s)
	}
	return path.Clean(s[:strings.LastIndex(s[:i], "/")+1])
}

// keyStore watches that the users' key folder can be read, and logs each
// change of that once: a share that did not mount would otherwise look
// like every key being wrong.
type keyStore struct {
	root string
	log  *zap.Logger

	mu   sync.Mutex // protects down
	down bool
}

// check reports ErrKeysUnavailable when the key folder cannot be used.
func (k *keyStore) check() error {
	err := readableRoot(k.root)
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case err != nil && !k.down:
		k.down = true
		k.log.Error("the users' authorized_keys cannot be read; no key login can succeed (is the share mounted?)", zap.String("path", k.root), zap.Error(err))
	case err == nil && k.down:
		k.down = false
		k.log.Info("the users' authorized_keys can be read again", zap.String("path", k.root))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	}
	return nil
}

// isDown reports whether the last check found the folder unusable.
func (k *keyStore) isDown() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.down
}

// readableRoot fails when dir is missing, not a folder, or empty.
func readableRoot(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a folder", dir)
	}
	if _, err := f.Readdirnames(1); err == io.EOF {
		return fmt.Errorf("%s is empty", dir)
	} else if err != nil {
		return err
	}
	return nil
}
