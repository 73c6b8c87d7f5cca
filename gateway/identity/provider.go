package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// Options are the parts of a Provider that are not configuration.
type Options struct {
	// HTTPClient makes every request to the provider. nil takes a client
	// of its own; a client without a Timeout gets one (a copy is made),
	// since go-oidc fetches keys with no deadline of its own.
	HTTPClient *http.Client
	// Logger is named "identity" by New. nil logs nothing.
	Logger *zap.Logger
	// Now is the clock for tokens and limits. nil is time.Now.
	Now func() time.Time
}

// rediscoverAfter is how long a failed discovery is remembered: sign-ins
// within it fail at once instead of each waiting on a provider that is
// down.
const rediscoverAfter = 5 * time.Second

// Provider signs users in with one OpenID Connect provider. It is safe
// for concurrent use.
type Provider struct {
	cfg    atomic.Pointer[Config] // replaced whole by SetConfig
	client *http.Client
	log    *zap.Logger
	now    func() time.Time
	// after waits between polls; tests make it instant.
	after func(time.Duration) <-chan time.Time
	limit *startLimiter

	// sem (capacity 1) is held while discovering and protects disc,
	// discErr and discAt.
	sem     chan struct{}
	disc    *discovered
	discErr error
	discAt  time.Time
}

// discovered is what the provider's discovery document told.
type discovered struct {
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	endpoint oauth2.Endpoint
	// deviceErr says why there is no device endpoint (DeviceAuthURL "").
	deviceErr error
}

// New returns a Provider for cfg (defaults applied here too). It makes no
// request: the discovery document is fetched at the first sign-in, and
// again at the next one after a failure, so that a gateway starts while
// the provider is down.
func New(cfg Config, opts Options) (*Provider, error) {
	cfg = cfg.WithDefaults()
	if !cfg.Enabled() {
		return nil, errors.New("identity: no identity.oidc.issuer configured")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("identity.%w", err)
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{}
	}
	if client.Timeout == 0 {
		c := *client
		c.Timeout = cfg.OIDC.RequestTimeout
		client = &c
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	p := &Provider{
		client: client, log: log.Named("identity"), now: now, after: time.After,
		limit: newStartLimiter(cfg.DeviceLimit, now),
		sem:   make(chan struct{}, 1),
	}
	p.cfg.Store(&cfg)
	return p, nil
}

// Config returns the configuration in force, defaults applied.
func (p *Provider) Config() Config { return *p.conf() }

func (p *Provider) conf() *Config { return p.cfg.Load() }

// SetConfig puts new settings in force (a reload): the groups, the
// name mapping, key_ttl, scopes, timeouts; a new issuer or client ID is
// discovered afresh at the next sign-in. Sign-ins under way finish under
// the settings they began with where they already read them. It returns
// the keys that need a restart (device_limit, made at start), or an
// error naming a bad key, in which case nothing changes.
func (p *Provider) SetConfig(cfg Config) (needRestart []string, err error) {
	cfg = cfg.WithDefaults()
	if !cfg.Enabled() {
		return nil, errors.New("oidc.issuer: empty; turning sign-in off needs a restart")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := cfg.OIDC.readSecret(); err != nil {
		return nil, fmt.Errorf("oidc.client_secret_file: %w", err)
	}
	old := p.conf()
	if cfg.DeviceLimit != old.DeviceLimit {
		needRestart = append(needRestart, "device_limit")
	}
	p.sem <- struct{}{}
	p.cfg.Store(&cfg)
	if cfg.OIDC.Issuer != old.OIDC.Issuer || cfg.OIDC.ClientID != old.OIDC.ClientID {
		p.disc, p.discErr = nil, nil
	}
	<-p.sem
	return needRestart, nil
}

// discover returns the provider's endpoints and verifier, fetching the
// discovery document when not yet known.
func (p *Provider) discover(ctx context.Context) (*discovered, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.sem }()
	if p.disc != nil {
		return p.disc, nil
	}
	if p.discErr != nil && p.now().Sub(p.discAt) < rediscoverAfter {
		return nil, p.discErr
	}
	d, err := p.fetchDiscovery(ctx)
	if err != nil {
		p.discErr, p.discAt = err, p.now()
		p.log.Error("identity provider discovery failed", zap.String("issuer", p.conf().OIDC.Issuer), zap.Error(err))
		return nil, err
	}
	p.disc, p.discErr = d, nil
	return d, nil
}

func (p *Provider) fetchDiscovery(ctx context.Context) (*discovered, error) {
	issuer := p.conf().OIDC.Issuer
	ctx, cancel := context.WithTimeout(ctx, p.conf().OIDC.RequestTimeout)
	defer cancel()
	op, err := oidc.NewProvider(oidc.ClientContext(ctx, p.client), issuer)
	if err != nil {
		var mismatch *oidc.IssuerMismatchError
		if errors.As(err, &mismatch) {
			return nil, refuse(ErrProviderUnavailable, err, "the identity provider is misconfigured on this gateway; ask ops (identity.oidc.issuer must be %q exactly)", mismatch.Discovered)
		}
		return nil, refuse(ErrProviderUnavailable, fmt.Errorf("discovery at %s: %w", issuer, err), "the identity provider cannot be reached; try again later, or log in with a key the gateway knows")
	}
	d := &discovered{provider: op, endpoint: op.Endpoint()}
	if d.endpoint.TokenURL == "" {
		return nil, refuse(ErrProviderUnavailable, errors.New("discovery document has no token_endpoint"), "the identity provider is misconfigured; ask ops")
	}
	if d.endpoint.DeviceAuthURL == "" {
		if u, ok := entraDeviceEndpoint(issuer); ok {
			d.endpoint.DeviceAuthURL = u
		} else {
			d.deviceErr = errors.New("discovery document has no device_authorization_endpoint (RFC 8628)")
		}
	}
	d.verifier = op.Verifier(&oidc.Config{ClientID: p.conf().OIDC.ClientID, Now: p.now})
	return d, nil
}

// entraDeviceEndpoint derives Entra ID's device-code endpoint from its
// v2.0 issuer, for discovery documents that lack it; only for
// login.microsoftonline.com.
func entraDeviceEndpoint(issuer string) (string, bool) {
	rest, ok := strings.CutPrefix(issuer, "https://"+entraHost+"/")
	if !ok {
		return "", false
	}
	tenant, ok := strings.CutSuffix(strings.TrimSuffix(rest, "/"), "/v2.0")
	if !ok || tenant == "" || strings.Contains(tenant, "/") {
		return "", false
	}
	return "https://" + entraHost + "/" + tenant + "/oauth2/v2.0/devicecode", true
}

// verify checks a raw ID token (signature by the provider's keys,
// refetched on an unknown key ID; issuer; audience; expiry; nonce when
// not "") and maps its claims.
func (p *Provider) verify(ctx context.Context, d *discovered, rawIDToken, nonce string) (*Identity, error) {
	if rawIDToken == "" {
		return nil, refuse(ErrInvalidToken, errors.New("token response has no id_token (is openid among identity.oidc.scopes?)"), "the identity provider sent no ID token; ask ops")
	}
	ctx, cancel := context.WithTimeout(ctx, p.conf().OIDC.RequestTimeout)
	defer cancel()
	tok, err := d.verifier.Verify(oidc.ClientContext(ctx, p.client), rawIDToken)
	if err != nil {
		return nil, refuse(ErrInvalidToken, err, "the identity provider's answer could not be verified; try again, or ask ops")
	}
	if nonce != "" && tok.Nonce != nonce {
		return nil, refuse(ErrInvalidToken, errors.New("nonce does not match"), "the sign-in could not be verified; start again")
	}
	var raw rawClaims
	if err := tok.Claims(&raw); err != nil {
		return nil, refuse(ErrInvalidToken, err, "the identity provider's token could not be read")
	}
	id, err := p.conf().mapClaims(raw)
	if id != nil {
		id.Issuer, id.Expiry = tok.Issuer, tok.Expiry
	}
	return id, err
}

// rawClaims keeps the claims' JSON as it came.
type rawClaims []byte

func (r *rawClaims) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// logRefusal logs a failed sign-in: a refusal of the user at Info, a
// fault of the provider at Error. Never a token: errors hold none.
func (p *Provider) logRefusal(method, client, login string, id *Identity, err error) {
	fields := []zap.Field{zap.String("method", method), zap.String("client", client), zap.Error(err)}
	if login != "" {
		fields = append(fields, zap.String("login", login))
	}
	if id != nil {
		fields = append(fields, zap.String("user", id.User), zap.String("subject", id.Subject))
	}
	if errors.Is(err, ErrProviderUnavailable) {
		p.log.Error("sign-in failed", fields...)
		return
	}
	p.log.Info("sign-in refused", fields...)
}

func (p *Provider) logSignIn(method, client string, id *Identity) {
	p.log.Info("signed in", zap.String("method", method), zap.String("user", id.User),
		zap.String("subject", id.Subject), zap.String("client", client), zap.Int("groups", len(id.Groups)))
}
