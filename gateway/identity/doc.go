// Package identity signs users in with Entra ID or any OpenID Connect
// provider that implements the device authorization grant (RFC 8628),
// and remembers which SSH keys a signed-in user brought.
//
// It owns: the "identity" config section; discovery of the provider and
// verification of its ID tokens (github.com/coreos/go-oidc: signature by
// the provider's published keys, fetched again on an unknown key ID;
// issuer; audience = client_id; expiry); the mapping of a token's claims
// to a canonical login name (package internal/username) and to groups;
// the device-code flow for terminals; the browser flow (authorization
// code with PKCE, golang.org/x/oauth2) for the HTTP front end and the
// dashboard; and the store of key bindings, in memory or in Redis.
//
// It imports no front end: sshgw, httpgw and admin ask it "who is this?".
//
// # Device-code sign-in over SSH
//
// ssh alice@pool with a key the gateway does not know:
//
//	s, err := p.StartDevice(ctx, "alice", conn.RemoteAddr()) // limited per address
//	if err != nil {
//		return identity.UserMessage(err) // one "poolgate: ..." line
//	}
//	// one keyboard-interactive prompt holding s.Message, e.g. Entra's
//	// "To sign in, use a web browser to open the page
//	// https://microsoft.com/devicelogin and enter the code FQK4XZ2B to
//	// authenticate."
//	id, err := s.Wait(ctx) // until signed in (as alice), declined or expired
//	if err == nil && provenKey != nil {
//		err = bindings.Bind(ctx, identity.NewBinding(id, provenKey, client, now, cfg.KeyTTL))
//	}
//
// Later connections that prove possession of a bound key (by signature)
// look it up by fingerprint and go straight in while the binding lasts.
//
// # Failures
//
// Every failure wraps one of the Err* reasons (errors.Is), or a context
// error when the caller gave up; UserMessage gives the line to show. The
// provider being down or slow fails a sign-in within
// identity.oidc.request_timeout per request, never hangs it; discovery
// is tried again at a later sign-in. The log gets each sign-in and
// refusal with user, provider subject and client address, and the
// provider's error code and AADSTS text, never a token or device code.
package identity
