package keyvault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"golang.org/x/crypto/ssh"
)

// MinRSABits is the smallest RSA key accepted.
const MinRSABits = 3072

// Default budgets: how long one signature, and opening the key at start,
// may take with their retries.
const (
	DefaultBudget     = 4 * time.Second
	DefaultOpenBudget = 30 * time.Second
)

// Options configure a Signer. Credential is required.
type Options struct {
	// Credential signs in to Key Vault (the gateway's managed identity;
	// tests: azcore/fake's TokenCredential).
	Credential azcore.TokenCredential
	// Transport carries the requests; nil: the network. Tests pass the
	// SDK's fake server (keyvaulttest).
	Transport policy.Transporter
	// Budget is how long one signature may take, retries included; 0:
	// DefaultBudget. OpenBudget is the same for fetching the key at Open;
	// 0: DefaultOpenBudget.
	Budget, OpenBudget time.Duration
	// Throttled, if set, is called on each 429 answer, whether or not a
	// retry then succeeds: the early sign that the vault's shared budget
	// runs out (poolgate_keyvault_throttled_total). nil: nothing.
	Throttled func()
	// Now and Sleep are the clock; nil: the real one. Sleep returns early
	// with ctx's error.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Signer is a crypto.Signer over one version of a Key Vault key. It is
// safe for concurrent use.
type Signer struct {
	client  *azkeys.Client
	vault   string // the vault's host, for messages
	name    string
	version string // resolved at Open: every signature uses exactly this version
	pub     crypto.PublicKey
	curve   elliptic.Curve // nil for RSA
	o       Options
}

// Open fetches the public key of key name in the vault at vaultURL (its
// latest version when version is empty) and returns a Signer that signs
// with that version.
func Open(ctx context.Context, vaultURL, name, version string, o Options) (*Signer, error) {
	if o.Credential == nil {
		return nil, errors.New("keyvault: no credential")
	}
	u, err := url.Parse(vaultURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("keyvault: vault URL %q: want https://NAME.vault.azure.net/", vaultURL)
	}
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.OpenBudget <= 0 {
		o.OpenBudget = DefaultOpenBudget
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	co := &azkeys.ClientOptions{}
	co.Transport = o.Transport
	co.Retry.MaxRetries = -1 // Signer retries itself, within its budget
	co.Telemetry.ApplicationID = "poolgate"
	client, err := azkeys.NewClient(vaultURL, o.Credential, co)
	if err != nil {
		return nil, fmt.Errorf("keyvault: %w", err)
	}
	s := &Signer{client: client, vault: u.Host, name: name, o: o}
	var bundle azkeys.KeyBundle
	err = s.retry(ctx, o.OpenBudget, "fetching the public key of", func(ctx context.Context) error {
		resp, err := client.GetKey(ctx, name, version, nil)
		bundle = resp.KeyBundle
		return err
	})
	if err != nil {
		return nil, s.explain(version, err)
	}
	if err := s.setKey(bundle); err != nil {
		return nil, fmt.Errorf("keyvault: key %s in %s: %w", s.ref(version), s.vault, err)
	}
	return s, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ref names the key (and version) in messages.
func (s *Signer) ref(version string) string {
	if version == "" {
		return s.name
	}
	return s.name + "/" + version
}

// setKey takes the public key and version from what GetKey returned.
func (s *Signer) setKey(b azkeys.KeyBundle) error {
	k := b.Key
	if k == nil || k.Kty == nil || k.KID == nil {
		return errors.New("the vault returned no key")
	}
	s.version = k.KID.Version()
	if s.version == "" {
		return fmt.Errorf("the vault returned key ID %q without a version", *k.KID)
	}
	if b.Attributes != nil && b.Attributes.Enabled != nil && !*b.Attributes.Enabled {
		return errors.New("the key is disabled")
	}
	if len(k.KeyOps) > 0 && !slices.ContainsFunc(k.KeyOps, func(op *azkeys.KeyOperation) bool { return op != nil && *op == azkeys.KeyOperationSign }) {
		return errors.New("the key does not permit the sign operation (key_ops)")
	}
	switch *k.Kty {
	case azkeys.KeyTypeEC, azkeys.KeyTypeECHSM:
		var curve elliptic.Curve
		switch {
		case k.Crv != nil && *k.Crv == azkeys.CurveNameP256:
			curve = elliptic.P256()
		case k.Crv != nil && *k.Crv == azkeys.CurveNameP384:
			curve = elliptic.P384()
		default:
			crv := "none"
			if k.Crv != nil {
				crv = string(*k.Crv)
			}
			return fmt.Errorf("EC curve %s is not supported: use P-256 or P-384", crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(k.X) > size || len(k.Y) > size || len(k.X) == 0 || len(k.Y) == 0 {
			return errors.New("the vault returned a malformed EC public key")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		copy(point[1+size-len(k.X):1+size], k.X)
		copy(point[1+2*size-len(k.Y):], k.Y)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return fmt.Errorf("the vault returned an invalid EC public key: %w", err)
		}
		s.pub, s.curve = pub, curve
	case azkeys.KeyTypeRSA, azkeys.KeyTypeRSAHSM:
		n := new(big.Int).SetBytes(k.N)
		e := new(big.Int).SetBytes(k.E)
		if n.BitLen() < MinRSABits {
			return fmt.Errorf("RSA key of %d bits is too small: use %d bits or more", n.BitLen(), MinRSABits)
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return errors.New("the vault returned an RSA key with an unusable exponent")
		}
		s.pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
	default:
		return fmt.Errorf("key type %s is not supported: use an EC P-256 or P-384 key, or RSA of %d bits or more (Key Vault has no Ed25519)", *k.Kty, MinRSABits)
	}
	return nil
}

// Public returns the key's public half (*ecdsa.PublicKey or *rsa.PublicKey).
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// ID names the key version that signs: VAULT/keys/NAME/VERSION.
func (s *Signer) ID() string { return s.vault + "/keys/" + s.name + "/" + s.version }

// Sign signs digest with Key Vault's sign API, within Options.Budget. It
// returns an ASN.1 DER signature for EC keys and PKCS #1 v1.5 for RSA
// keys. rand is not used: Key Vault makes its own randomness.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign that also ends when ctx does.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	alg, err := s.algorithm(opts)
	if err != nil {
		return nil, fmt.Errorf("keyvault: key %s in %s: %w", s.name, s.vault, err)
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("keyvault: digest of %d bytes for %s", len(digest), alg)
	}
	var result []byte
	err = s.retry(ctx, s.o.Budget, "signing with", func(ctx context.Context) error {
		resp, err := s.client.Sign(ctx, s.name, s.version, azkeys.SignParameters{Algorithm: &alg, Value: digest}, nil)
		result = resp.Result
		return err
	})
	if err != nil {
		return nil, s.explain(s.version, err)
	}
	sig, err := s.encode(result, digest, opts.HashFunc())
	if err != nil {
		return nil, fmt.Errorf("keyvault: key %s in %s: %w", s.ref(s.version), s.vault, err)
	}
	return sig, nil
}

// algorithm is the Key Vault algorithm for a signature with opts' hash.
func (s *Signer) algorithm(opts crypto.SignerOpts) (azkeys.SignatureAlgorithm, error) {
	if _, ok := opts.(*rsa.PSSOptions); ok {
		return "", errors.New("RSA-PSS signatures are not used")
	}
	h := opts.HashFunc()
	if s.curve != nil {
		switch {
		case s.curve == elliptic.P256() && h == crypto.SHA256:
			return azkeys.SignatureAlgorithmES256, nil
		case s.curve == elliptic.P384() && h == crypto.SHA384:
			return azkeys.SignatureAlgorithmES384, nil
		}
		return "", fmt.Errorf("no ECDSA algorithm for %s with hash %v", s.curve.Params().Name, h)
	}
	switch h {
	case crypto.SHA256:
		return azkeys.SignatureAlgorithmRS256, nil
	case crypto.SHA384:
		return azkeys.SignatureAlgorithmRS384, nil
	case crypto.SHA512:
		return azkeys.SignatureAlgorithmRS512, nil
	}
	return "", fmt.Errorf("no RSA algorithm for hash %v (SHA-1 is not used)", h)
}

// encode checks Key Vault's signature against the public key and returns
// it in crypto.Signer's form: ECDSA's raw R‖S becomes ASN.1 DER.
func (s *Signer) encode(result, digest []byte, h crypto.Hash) ([]byte, error) {
	switch pub := s.pub.(type) {
	case *ecdsa.PublicKey:
		size := (s.curve.Params().BitSize + 7) / 8
		if len(result) != 2*size {
			return nil, fmt.Errorf("the vault returned an ECDSA signature of %d bytes, want %d (R‖S)", len(result), 2*size)
		}
		der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(result[:size]), new(big.Int).SetBytes(result[size:])})
		if err != nil {
			return nil, err
		}
		if !ecdsa.VerifyASN1(pub, digest, der) {
			return nil, errors.New("the vault's signature does not verify with the key's public key")
		}
		return der, nil
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pub, h, digest, result); err != nil {
			return nil, errors.New("the vault's signature does not verify with the key's public key")
		}
		return result, nil
	}
	return nil, errors.New("no public key")
}

// SSHSigner is the Signer for x/crypto/ssh, e.g. as a certificate
// authority. An RSA key signs with rsa-sha2-256 unless rsa-sha2-512 is
// asked for, never with SHA-1 (Key Vault has no RS1).
func (s *Signer) SSHSigner() (ssh.Signer, error) {
	sig, err := ssh.NewSignerFromSigner(s)
	if err != nil {
		return nil, err
	}
	if sig.PublicKey().Type() != ssh.KeyAlgoRSA {
		return sig, nil
	}
	return rsaSigner{sig.(ssh.AlgorithmSigner)}, nil
}

// rsaSigner defaults an RSA signer to rsa-sha2-256.
type rsaSigner struct{ ssh.AlgorithmSigner }

func (r rsaSigner) Algorithms() []string { return []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512} }

func (r rsaSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return r.SignWithAlgorithm(rand, data, ssh.KeyAlgoRSASHA256)
}

func (r rsaSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	if algorithm == "" {
		algorithm = ssh.KeyAlgoRSASHA256
	}
	return r.AlgorithmSigner.SignWithAlgorithm(rand, data, algorithm)
}

// String describes the signer for logs.
func (s *Signer) String() string {
	kind := "RSA"
	if s.curve != nil {
		kind = "EC " + s.curve.Params().Name
	}
	return fmt.Sprintf("Key Vault key %s (%s)", strings.TrimPrefix(s.ID(), s.vault+"/keys/"), kind)
}
