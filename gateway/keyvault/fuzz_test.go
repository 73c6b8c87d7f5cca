package keyvault

import (
	"crypto"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"golang.org/x/crypto/ssh"
)

// FuzzKeyVaultResponses feeds what a vault returns, a public key and a
// signature, to the code that reads them: it must refuse or accept
// without panicking, and an accepted key must be a valid SSH CA key.
func FuzzKeyVaultResponses(f *testing.F) {
	f.Add("EC", "P-256", []byte{1}, []byte{2}, []byte(nil), []byte(nil), []byte{3, 4})
	f.Add("RSA", "", []byte(nil), []byte(nil), make([]byte, 384), []byte{1, 0, 1}, make([]byte, 384))
	f.Add("EC-HSM", "P-384", make([]byte, 48), make([]byte, 48), []byte(nil), []byte(nil), make([]byte, 96))
	f.Fuzz(func(t *testing.T, kty, crv string, x, y, n, e, sig []byte) {
		id := azkeys.ID("https://v.vault.azure.net/keys/k/0123")
		k := &azkeys.JSONWebKey{KID: &id, Kty: to.Ptr(azkeys.KeyType(kty)), X: x, Y: y, N: n, E: e}
		if crv != "" {
			k.Crv = to.Ptr(azkeys.CurveName(crv))
		}
		s := &Signer{name: "k", vault: "v.vault.azure.net"}
		if err := s.setKey(azkeys.KeyBundle{Key: k}); err != nil {
			return
		}
		if _, err := ssh.NewPublicKey(s.Public()); err != nil {
			t.Fatalf("accepted a key that is no SSH key: %v", err)
		}
		h := crypto.SHA256
		if s.curve != nil && s.curve.Params().BitSize == 384 {
			h = crypto.SHA384
		}
		digest := make([]byte, h.Size())
		if _, err := s.encode(sig, digest, h); err == nil {
			t.Fatal("a fuzzed signature verified")
		}
	})
}
