package sshgw

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/atomicfile"
)

// File names inside state_dir.
const (
	HostKeyFile    = "ssh_host_ed25519_key"
	UserCAFile     = "user_ca_ed25519_key"
	KnownHostsFile = "node_host_keys" // the nodes' host keys (KnownHosts)
)

// Keys holds the gateway's long-lived secrets and the nodes' known host
// keys, all kept in state_dir.
type Keys struct {
	HostKey    ssh.Signer  // the gateway's own host key, shown to users
	CA         ssh.Signer  // the user CA that signs upstream login certificates
	KnownHosts *KnownHosts // node host keys, trusted on first contact
}

// LoadKeys opens state_dir, creating it (0700) and any missing key (0600).
func LoadKeys(stateDir string) (*Keys, error) { return LoadKeysCA(stateDir, nil) }

// LoadKeysCA is LoadKeys with the user CA given (a key in Azure Key
// Vault, say): then no CA key file is read or created. A nil ca is the
// file CA in state_dir.
func LoadKeysCA(stateDir string, ca ssh.Signer) (*Keys, error) {
	if err := EnsureStateDir(stateDir); err != nil {
		return nil, err
	}
	host, err := LoadOrCreateKey(filepath.Join(stateDir, HostKeyFile), "poolgate-host")
	if err != nil {
		return nil, err
	}
	if ca == nil {
		if ca, err = LoadOrCreateKey(filepath.Join(stateDir, UserCAFile), "poolgate-user-ca"); err != nil {
			return nil, err
		}
	}
	known, err := OpenKnownHosts(filepath.Join(stateDir, KnownHostsFile))
	if err != nil {
		return nil, err
	}
	return &Keys{HostKey: host, CA: ca, KnownHosts: known}, nil
}

// EnsureStateDir creates dir with mode 0700 if it does not exist.
func EnsureStateDir(dir string) error {
	if dir == "" {
		return errors.New("state_dir is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state_dir: %w", err)
	}
	return nil
}

// LoadOrCreateKey reads an OpenSSH private key from path, or creates an
// ed25519 key there (mode 0600, written atomically) if the file does not
// exist. A key file that group or others can read is refused: the CA key
// signs logins to every node.
func LoadOrCreateKey(path, comment string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path, comment)
	}
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s has mode %04o: others may read it; run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("parsing key %s: %w", path, err)
	}
	return signer, nil
}

func createKey(path, comment string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("writing key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

// AuthorizedCALine is the CA's public key in authorized_keys format, the
// line that goes into each node's TrustedUserCAKeys file.
func AuthorizedCALine(ca ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey()))) + " poolgate-user-ca"
}

// certExtensions are the permissions granted to an upstream login unless
// the user's authorized_keys entry restricts them.
var certExtensions = []string{
	"permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc",
}

// CertValidity is how long an upstream login certificate is valid. The node
// checks it only at login, so it needs to cover the handshake alone; the
// minute of back-dating absorbs clock skew between gateway and nodes.
const CertValidity = 5 * time.Minute

// signUserCert returns a signer holding a fresh ed25519 key and a user
// certificate for exactly the given login name, signed by ca.
func signUserCert(ca ssh.Signer, user, keyID string, r restrictions, now time.Time) (ssh.Signer, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	key, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, err
	}
	cert := &ssh.Certificate{
		Key:             sshPub,
		Serial:          uint64(serial[0])<<56 | uint64(serial[1])<<48 | uint64(serial[2])<<40 | uint64(serial[3])<<32 | uint64(serial[4])<<24 | uint64(serial[5])<<16 | uint64(serial[6])<<8 | uint64(serial[7]),
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: []string{user},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(CertValidity).Unix()),
		Permissions:     r.certPermissions(),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, fmt.Errorf("signing user certificate: %w", err)
	}
	return ssh.NewCertSigner(cert, key)
}
