package app

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/gateway/keyvault"
	"github.com/poolgate/poolgate/gateway/sshgw"
)

// CASection is the "ca" section: where the SSH user CA's private key
// lives. Empty: a key file in state_dir, created on first use.
type CASection struct {
	// KeyVault keeps the key in Azure Key Vault; the gateway only asks
	// the vault to sign.
	KeyVault *KeyVaultCA `yaml:"key_vault"`
}

// KeyVaultCA is "ca.key_vault": an EC P-256 or P-384 key, or RSA of 3072
// bits or more, in an Azure Key Vault. The gateway reaches it with the
// identity of discovery.azure (its credential and client_id), or the VM's
// managed identity when discovery.azure is not set; the identity needs
// the role Key Vault Crypto User.
type KeyVaultCA struct {
	// URL of the vault, e.g. https://pool-kv.vault.azure.net/. Required.
	URL string `yaml:"url"`
	// Key is the key's name. Required.
	Key string `yaml:"key"`
	// Version pins a version of the key; empty: the latest at start.
	Version string `yaml:"version"`
	// Previous is a key that nodes should still trust while the pool
	// moves to a new one (rotation): a version of Key, another key's
	// NAME or NAME/VERSION, or a key identifier URL in the same vault.
	// ca-pubkey prints its line after the current one; it never signs.
	Previous string `yaml:"previous"`
}

var (
	keyNameRE    = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	keyVersionRE = regexp.MustCompile(`^[0-9A-Za-z]{1,64}$`)
	// A Key Vault version as the vault makes them: 32 hex digits.
	madeVersionRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// Validate reports every bad key (joined, one error each), as
// "key_vault.key: problem".
func (c CASection) Validate() error {
	var errs []error
	k := c.KeyVault
	if k == nil {
		return nil
	}
	if k.URL == "" {
		errs = append(errs, errors.New("key_vault.url: required: the vault's URL, e.g. https://pool-kv.vault.azure.net/"))
	} else if u, err := url.Parse(k.URL); err != nil || u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("key_vault.url: %q is not a vault URL such as https://pool-kv.vault.azure.net/", k.URL))
	}
	if k.Key == "" {
		errs = append(errs, errors.New("key_vault.key: required: the name of the CA key in the vault"))
	} else if !keyNameRE.MatchString(k.Key) {
		errs = append(errs, fmt.Errorf("key_vault.key: %q is not a Key Vault key name (letters, digits and dashes)", k.Key))
	}
	if k.Version != "" && !keyVersionRE.MatchString(k.Version) {
		errs = append(errs, fmt.Errorf("key_vault.version: %q is not a key version (letters and digits)", k.Version))
	}
	if _, _, err := k.previous(); err != nil {
		errs = append(errs, fmt.Errorf("key_vault.previous: %w", err))
	}
	return errors.Join(errs...)
}

// previous is the previous key's name and version ("" for its latest);
// name is "" when there is none.
func (k KeyVaultCA) previous() (name, version string, err error) {
	p := k.Previous
	switch {
	case p == "":
		return "", "", nil
	case strings.HasPrefix(p, "https://"):
		u, perr := url.Parse(p)
		vault, _ := url.Parse(k.URL)
		if perr != nil || vault == nil || !strings.EqualFold(u.Host, vault.Host) {
			return "", "", fmt.Errorf("%q is not a key identifier in the vault %s", p, k.URL)
		}
		rest, ok := strings.CutPrefix(strings.Trim(u.Path, "/"), "keys/")
		if !ok {
			return "", "", fmt.Errorf("%q is not a key identifier (https://VAULT/keys/NAME/VERSION)", p)
		}
		name, version, _ = strings.Cut(rest, "/")
	case strings.Contains(p, "/"):
		name, version, _ = strings.Cut(p, "/")
	case madeVersionRE.MatchString(p):
		name, version = k.Key, p
	default:
		name = p
	}
	if !keyNameRE.MatchString(name) || version != "" && !keyVersionRE.MatchString(version) {
		return "", "", fmt.Errorf("%q names no key: use a VERSION of ca.key_vault.key, NAME, NAME/VERSION or https://VAULT/keys/NAME/VERSION", p)
	}
	if name == k.Key && version == k.Version {
		return "", "", fmt.Errorf("%q is the current key", p)
	}
	return name, version, nil
}

// WithKeyVault gives ca.key_vault a credential, transport and clock of the
// caller's instead of the gateway's managed identity and the network
// (tests pass keyvaulttest's fake credential and transport).
func WithKeyVault(ko keyvault.Options) Option {
	return func(o *options) { o.keyVault = ko }
}

// countThrottling registers poolgate_keyvault_throttled_total with reg
// when the CA is in Key Vault, and has ko count each 429 answer there
// (besides any Throttled of the caller's).
func countThrottling(reg prometheus.Registerer, cfg Config, ko keyvault.Options) keyvault.Options {
	if cfg.CA.KeyVault == nil {
		return ko
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "poolgate_keyvault_throttled_total",
		Help: "429 answers from the Key Vault that holds the user CA, retried or not: its throttling budget, shared by all logins, is running out.",
	})
	reg.MustRegister(c)
	prev := ko.Throttled
	ko.Throttled = func() {
		c.Inc()
		if prev != nil {
			prev()
		}
	}
	return ko
}

// buildCA returns the user CA that signs node-login certificates: the key
// file in state_dir (created on first use), or the ca.key_vault key, whose
// public half is fetched now so that a vault the gateway cannot use stops
// it at start. It never falls back from one to the other. desc says which,
// for the log.
func buildCA(ctx context.Context, cfg Config, ko keyvault.Options) (ca ssh.Signer, desc string, err error) {
	k := cfg.CA.KeyVault
	if k == nil {
		if err := sshgw.EnsureStateDir(cfg.StateDir); err != nil {
			return nil, "", fmt.Errorf("state_dir: %w", err)
		}
		path := filepath.Join(cfg.StateDir, sshgw.UserCAFile)
		ca, err := sshgw.LoadOrCreateKey(path, "poolgate-user-ca")
		if err != nil {
			return nil, "", fmt.Errorf("state_dir: %w", err)
		}
		return ca, "key file " + path, nil
	}
	s, err := openKeyVault(ctx, cfg, k.Key, k.Version, ko)
	if err != nil {
		return nil, "", err
	}
	if ca, err = s.SSHSigner(); err != nil {
		return nil, "", fmt.Errorf("ca.key_vault: %w", err)
	}
	return ca, s.String() + " in " + k.URL, nil
}

func openKeyVault(ctx context.Context, cfg Config, name, version string, ko keyvault.Options) (*keyvault.Signer, error) {
	if ko.Credential == nil {
		cred, err := keyVaultCredential(cfg.Discovery.Azure)
		if err != nil {
			return nil, fmt.Errorf("ca.key_vault: the gateway's Azure identity: %w", err)
		}
		ko.Credential = cred
	}
	s, err := keyvault.Open(ctx, cfg.CA.KeyVault.URL, name, version, ko)
	if err != nil {
		return nil, fmt.Errorf("ca.key_vault: %w", err)
	}
	return s, nil
}

// keyVaultCredential is the gateway's Azure identity, for Key Vault and
// Blob Storage: that of discovery.azure when it is set, else the VM's
// managed identity. Building it contacts nothing.
func keyVaultCredential(az *discovery.AzureConfig) (azcore.TokenCredential, error) {
	if az != nil && az.Credential == discovery.CredentialDefault {
		return azidentity.NewDefaultAzureCredential(nil)
	}
	var opts azidentity.ManagedIdentityCredentialOptions
	if az != nil && az.ClientID != "" {
		opts.ID = azidentity.ClientID(az.ClientID)
	}
	return azidentity.NewManagedIdentityCredential(&opts)
}

// CALines are the lines for the nodes' TrustedUserCAKeys file, as
// `poolgate ca-pubkey` prints them: the user CA's public key (the file
// CA's, created in state_dir if missing, or the Key Vault key's), then
// ca.key_vault.previous's during a rotation.
func CALines(cfg Config, opts ...Option) ([]string, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	ctx := context.Background()
	ca, _, err := buildCA(ctx, cfg, o.keyVault)
	if err != nil {
		return nil, err
	}
	lines := []string{sshgw.AuthorizedCALine(ca)}
	if cfg.CA.KeyVault == nil {
		return lines, nil
	}
	name, version, err := cfg.CA.KeyVault.previous()
	if err != nil || name == "" {
		return lines, err
	}
	prev, err := openKeyVault(ctx, cfg, name, version, o.keyVault)
	if err != nil {
		return nil, fmt.Errorf("%w (ca.key_vault.previous)", err)
	}
	pub, err := ssh.NewPublicKey(prev.Public())
	if err != nil {
		return nil, fmt.Errorf("ca.key_vault.previous: %w", err)
	}
	return append(lines, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))+" poolgate-user-ca-previous"), nil
}
