package sshgw

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoadKeysCreatesOnceWithSafeModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{HostKeyFile, UserCAFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, st.Mode().Perm())
		}
	}
	k2, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1.CA.PublicKey().Marshal(), k2.CA.PublicKey().Marshal()) ||
		!bytes.Equal(k1.HostKey.PublicKey().Marshal(), k2.HostKey.PublicKey().Marshal()) {
		t.Fatal("keys changed between starts")
	}
	if bytes.Equal(k1.CA.PublicKey().Marshal(), k1.HostKey.PublicKey().Marshal()) {
		t.Fatal("host key and CA key are the same key")
	}
	os.Chmod(filepath.Join(dir, UserCAFile), 0o644)
	if _, err := LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable CA key accepted: %v", err)
	}
}

func TestSignUserCert(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(priv)
	now := time.Unix(1_800_000_000, 0)
	s, err := signUserCert(ca, "alice", "poolgate:alice", restrictions{noAgent: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert := s.PublicKey().(*ssh.Certificate)
	if cert.CertType != ssh.UserCert || len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != "alice" {
		t.Fatalf("cert type %d principals %v", cert.CertType, cert.ValidPrincipals)
	}
	if got := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; got != CertValidity+time.Minute {
		t.Fatalf("validity %s", got)
	}
	checker := ssh.CertChecker{Clock: func() time.Time { return now }}
	if err := checker.CheckCert("alice", cert); err != nil {
		t.Fatalf("CheckCert(alice): %v", err)
	}
	if err := checker.CheckCert("bob", cert); err == nil {
		t.Fatal("certificate valid for bob")
	}
	if _, ok := cert.Extensions["permit-agent-forwarding"]; ok {
		t.Fatal("no-agent-forwarding key got permit-agent-forwarding")
	}
	if _, ok := cert.Extensions["permit-pty"]; !ok {
		t.Fatal("permit-pty missing")
	}
}

func TestKnownHosts(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	p, err := OpenKnownHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := testKey(t)
	k2, _ := testKey(t)
	if p.Algorithms("node-1") != nil {
		t.Fatal("unknown node has algorithms")
	}
	if err := p.Callback("node-1")("", nil, k1); err != nil {
		t.Fatalf("first contact: %v", err)
	}
	if err := p.Callback("node-1")("", nil, k1); err != nil {
		t.Fatalf("same key again: %v", err)
	}
	if err := p.Callback("node-2")("", nil, k2); err != nil {
		t.Fatalf("other node: %v", err)
	}
	// A restart reads the known keys back.
	p2, err := OpenKnownHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	err = p2.Callback("node-1")("", nil, k2)
	if !errors.Is(err, ErrHostKeyChanged) || !strings.Contains(err.Error(), "delete its line in") {
		t.Fatalf("changed key: %v", err)
	}
	if algs := p2.Algorithms("node-1"); len(algs) != 1 || algs[0] != ssh.KeyAlgoED25519 {
		t.Fatalf("Algorithms = %v", algs)
	}
	os.WriteFile(path, []byte("node-1 garbage\n"), 0o600)
	if _, err := OpenKnownHosts(path); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Fatalf("corrupt known hosts file: %v", err)
	}
}

func mkdirWrite(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
