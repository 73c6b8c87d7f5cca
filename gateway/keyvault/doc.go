// Package keyvault signs with a key kept in Azure Key Vault: the gateway's
// SSH user CA can live there instead of in state_dir, so the private key
// never reaches the gateway's disk and every signature is in the vault's
// audit log.
//
// A [Signer] fetches the key's public half once, at [Open] (the latest
// version unless one is named, and from then on always that version), and
// asks Key Vault's sign API for each signature: ES256 or ES384 for EC
// P-256 or P-384 keys, RS256 or RS512 for RSA keys of 3072 bits or more,
// matching the SSH algorithm. Key Vault returns an ECDSA signature as raw
// R‖S; Sign turns it into the ASN.1 form that crypto.Signer promises and
// that x/crypto's ssh.NewSignerFromSigner expects. Key Vault has no
// Ed25519.
//
// Throttling (429, honouring Retry-After) and Key Vault's own failures
// (5xx, connection errors) are retried within a budget (Options.Budget,
// default 4 s for a signature), so a login waits a few seconds at most;
// then Sign fails with an error that says what failed and why. Nothing
// here falls back to another key. Options.Throttled hears of every 429,
// retried or not, for a metric.
//
// Usage:
//
//	s, err := keyvault.Open(ctx, "https://pool-kv.vault.azure.net/", "poolgate-user-ca", "", keyvault.Options{Credential: cred})
//	ca, err := s.SSHSigner() // for ssh.Certificate.SignCert
//
// Tests pass Options.Transport and a fake credential (keyvaulttest wires
// the SDK's azkeys/fake server to a real key made in the test); nothing
// in them reaches Azure.
//
// keyvault imports the Azure SDK (azcore, azkeys) and x/crypto/ssh, and
// nothing else of the project.
package keyvault
