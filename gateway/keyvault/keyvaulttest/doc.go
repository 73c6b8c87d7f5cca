// Package keyvaulttest is a fake Azure Key Vault for tests: the Azure
// SDK's own azkeys/fake server, backed by real keys made in the test, so
// that its signatures verify, with failures (429 with Retry-After, 5xx,
// 403) injected on demand and the round trips counted. Nothing reaches
// Azure.
//
// Usage:
//
//	v := keyvaulttest.New()
//	v.AddKey("poolgate-user-ca", keyvaulttest.P256(t))
//	s, err := keyvault.Open(ctx, v.URL, "poolgate-user-ca", "", keyvault.Options{Credential: keyvaulttest.Credential(), Transport: v.Transport()})
//
// keyvaulttest imports the Azure SDK and nothing of the project.
package keyvaulttest
