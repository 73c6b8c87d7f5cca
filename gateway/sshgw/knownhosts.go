package sshgw

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// ErrHostKeyChanged means a node presented a host key other than the one
// recorded on first contact.
var ErrHostKeyChanged = errors.New("node host key does not match the known one")

// KnownHosts keeps each node's host key, trusted on first contact (as
// OpenSSH's known_hosts), in a file of lines "NODE-NAME KEY-TYPE BASE64"
// (the known_hosts layout with the node name as host). To accept a
// node's new key after a reinstall, delete its line and reload (SIGHUP).
type KnownHosts struct {
	path string
	mu   sync.Mutex // protects keys and appends to the file
	keys map[string]ssh.PublicKey
}

// OpenKnownHosts reads the known host keys at path; a missing file is an
// empty store.
func OpenKnownHosts(path string) (*KnownHosts, error) {
	keys, err := readKnownHosts(path)
	if err != nil {
		return nil, err
	}
	return &KnownHosts{path: path, keys: keys}, nil
}

// Reload reads the file again (SIGHUP): a line ops deleted after
// rebuilding a node is forgotten, so that node's new key is learnt on
// first contact. A file that does not parse changes nothing.
func (p *KnownHosts) Reload() (forgotten []string, err error) {
	keys, err := readKnownHosts(p.path)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.keys {
		if _, ok := keys[name]; !ok {
			forgotten = append(forgotten, name)
		}
	}
	p.keys = keys
	slices.Sort(forgotten)
	return forgotten, nil
}

// readKnownHosts reads the file; a missing one holds no key.
func readKnownHosts(path string) (map[string]ssh.PublicKey, error) {
	keys := map[string]ssh.PublicKey{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return keys, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading node host keys: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, rest, ok := strings.Cut(text, " ")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want NODE-NAME KEY-TYPE BASE64", path, line)
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rest))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		keys[name] = key
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return keys, nil
}

// Callback returns the host-key check for one node: the known key must
// match; a node seen for the first time has its key recorded and saved.
func (p *KnownHosts) Callback(node string) ssh.HostKeyCallback {
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if old, ok := p.keys[node]; ok {
			if bytes.Equal(old.Marshal(), key.Marshal()) {
				return nil
			}
			return fmt.Errorf("%w: node %s presented %s %s, known %s %s (if the node was rebuilt, delete its line in %s)",
				ErrHostKeyChanged, node, key.Type(), ssh.FingerprintSHA256(key), old.Type(), ssh.FingerprintSHA256(old), p.path)
		}
		line := node + " " + string(ssh.MarshalAuthorizedKey(key))
		f, err := os.OpenFile(p.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("saving host key of node %s: %w", node, err)
		}
		_, err = f.WriteString(line)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("saving host key of node %s: %w", node, err)
		}
		p.keys[node] = key
		return nil
	}
}

// Algorithms returns the host-key algorithms to ask a node for, so it shows
// the key type that was recorded; nil (any) for a node not yet known.
func (p *KnownHosts) Algorithms(node string) []string {
	p.mu.Lock()
	key, ok := p.keys[node]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	if key.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{key.Type()}
}
