package identity

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// The browser sign-in (authorization code with PKCE, RFC 7636) for the
// HTTP front end and the dashboard. Per attempt the caller makes a state
// and a nonce (random, e.g. oauth2.GenerateVerifier() for each) and a
// verifier (oauth2.GenerateVerifier), keeps them with the browser (a
// short-lived signed cookie), sends the browser to AuthCodeURL, and on
// the callback checks state itself before calling Exchange.

// oauth2Config is the x/oauth2 form of the client for the browser flow.
func (p *Provider) oauth2Config(d *discovered, redirectURL string) (*oauth2.Config, error) {
	secret, err := p.conf().OIDC.readSecret()
	if err != nil {
		return nil, refuse(ErrProviderUnavailable, err, "sign-in is misconfigured on this gateway; ask ops")
	}
	return &oauth2.Config{
		ClientID: p.conf().OIDC.ClientID, ClientSecret: secret,
		Endpoint: d.endpoint, RedirectURL: redirectURL, Scopes: p.conf().OIDC.Scopes,
	}, nil
}

// AuthCodeURL returns the provider's sign-in page for a browser, with
// state, nonce and the S256 challenge of verifier. It fetches the
// discovery document if not yet known.
func (p *Provider) AuthCodeURL(ctx context.Context, state, nonce, verifier, redirectURL string) (string, error) {
	if state == "" || nonce == "" || verifier == "" {
		return "", errors.New("identity: AuthCodeURL needs a state, a nonce and a verifier")
	}
	d, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	if d.endpoint.AuthURL == "" {
		return "", refuse(ErrProviderUnavailable, errors.New("discovery document has no authorization_endpoint"), "the identity provider offers no browser sign-in; ask ops")
	}
	c, err := p.oauth2Config(d, redirectURL)
	if err != nil {
		return "", err
	}
	return c.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// Exchange redeems the code of a browser sign-in (the caller has checked
// state) with the verifier and redirect URL of AuthCodeURL, and returns
// the verified identity, whose nonce must be nonce. client is the
// browser's address, for the log.
func (p *Provider) Exchange(ctx context.Context, code, nonce, verifier, redirectURL string, client net.Addr) (*Identity, error) {
	caddr := ""
	if client != nil {
		caddr = client.String()
	}
	id, err := p.exchange(ctx, code, nonce, verifier, redirectURL)
	if err != nil {
		p.logRefusal("browser", caddr, "", id, err)
		return nil, err
	}
	p.logSignIn("browser", caddr, id)
	return id, nil
}

func (p *Provider) exchange(ctx context.Context, code, nonce, verifier, redirectURL string) (*Identity, error) {
	if code == "" || nonce == "" || verifier == "" {
		return nil, refuse(ErrInvalidToken, errors.New("callback without code, or no nonce or verifier kept"), "the sign-in could not be verified; start again")
	}
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	c, err := p.oauth2Config(d, redirectURL)
	if err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, p.conf().OIDC.RequestTimeout)
	defer cancel()
	tok, err := c.Exchange(oidc.ClientContext(tctx, p.client), code, oauth2.VerifierOption(verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, refuse(ErrInvalidToken, fmt.Errorf("code exchange: %s: %s", re.ErrorCode, printable(re.ErrorDescription, 300)), "the sign-in could not be completed; start again")
		}
		return nil, refuse(ErrProviderUnavailable, fmt.Errorf("code exchange: %w", err), "the identity provider cannot be reached; try again later")
	}
	raw, _ := tok.Extra("id_token").(string)
	return p.verify(ctx, d, raw, nonce)
}
