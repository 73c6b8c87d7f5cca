package identity

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Config is the YAML section "identity". The zero value (no issuer) turns
// sign-in off.
//
// Validate names keys relative to the section ("oidc.client_id: ..."), as
// every section of the config does; cmd prefixes "identity.".
type Config struct {
	OIDC OIDCConfig `yaml:"oidc"`
	// KeyTTL is how long a public key offered in a signed-in connection
	// stays bound to the identity that signed in. Default 12h.
	KeyTTL time.Duration `yaml:"key_ttl"`
	// AllowedGroups are the groups (object IDs or names, as the token's
	// groups claim carries them) whose members may sign in. Empty lets
	// every user of the provider in.
	AllowedGroups []string `yaml:"allowed_groups"`
	// OpsGroups are the groups whose members may use the dashboard and
	// admin API through the browser sign-in.
	OpsGroups []string `yaml:"ops_groups"`
	// DeviceLimit bounds how often device-code sign-ins may start.
	DeviceLimit DeviceLimit `yaml:"device_limit"`
}

// OIDCConfig is the YAML section "identity.oidc".
type OIDCConfig struct {
	// Issuer is the provider's issuer URL, exactly as its discovery
	// document and tokens name it; for Entra ID,
	// https://login.microsoftonline.com/TENANT-ID/v2.0 with the tenant's
	// ID (not "common" or "organizations", whose tokens name each user's
	// own tenant). Empty turns sign-in off.
	Issuer string `yaml:"issuer"`
	// ClientID is the application (client) ID registered with the
	// provider, the audience of its ID tokens. Required with Issuer.
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret, only for the browser
	// sign-in of a confidential client. The device flow of a public
	// client needs none.
	ClientSecretFile string `yaml:"client_secret_file"`
	// UsernameClaim is the ID-token claim whose value, with any @domain
	// dropped, is the login name. Default preferred_username.
	UsernameClaim string `yaml:"username_claim"`
	// UsernameDomains, when set, are the only domains a username claim
	// may carry (alice@contoso.com); a name in another domain, such as a
	// guest's home domain, is refused rather than mapped onto a local
	// name. Empty accepts any domain.
	UsernameDomains []string `yaml:"username_domains"`
	// Scopes asked for. Default [openid, profile, email].
	Scopes []string `yaml:"scopes"`
	// RequestTimeout bounds each request to the provider (discovery,
	// keys, device code, each poll of the token endpoint). Default 10s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// DeviceLimit is the YAML section "identity.device_limit": device-code
// sign-ins started within Window, per client address (IPv6 by /64) and in
// all. Each start is a request to the provider, which throttles per
// application: the bound keeps one client from spending everyone's share.
type DeviceLimit struct {
	// PerAddress bounds starts from one address. Default 5.
	PerAddress int `yaml:"per_address"`
	// Total bounds starts from all addresses. Default 120.
	Total int `yaml:"total"`
	// Window is how long a start counts. Default 1m.
	Window time.Duration `yaml:"window"`
}

// Documented defaults.
const (
	DefaultKeyTTL          = 12 * time.Hour
	DefaultUsernameClaim   = "preferred_username"
	DefaultRequestTimeout  = 10 * time.Second
	DefaultDevicePerAddr   = 5
	DefaultDeviceTotal     = 120
	DefaultDeviceWindow    = time.Minute
	entraHost              = "login.microsoftonline.com"
	entraMultiTenantIssuer = "common, organizations, consumers"
)

// DefaultScopes are asked for when Scopes is empty.
var DefaultScopes = []string{"openid", "profile", "email"}

// Enabled reports whether sign-in is configured.
func (c Config) Enabled() bool { return c.OIDC.Issuer != "" }

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.KeyTTL == 0 {
		c.KeyTTL = DefaultKeyTTL
	}
	o := &c.OIDC
	if o.UsernameClaim == "" {
		o.UsernameClaim = DefaultUsernameClaim
	}
	if len(o.Scopes) == 0 {
		o.Scopes = slices.Clone(DefaultScopes)
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	d := &c.DeviceLimit
	if d.PerAddress == 0 {
		d.PerAddress = DefaultDevicePerAddr
	}
	if d.Total == 0 {
		d.Total = DefaultDeviceTotal
	}
	if d.Window == 0 {
		d.Window = DefaultDeviceWindow
	}
	return c
}

// Validate reports every bad setting (joined, one error each), naming its key within the
// section. Without an issuer the section must set nothing that needs
// one.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	o := c.OIDC
	if o.Issuer == "" {
		if o.ClientID != "" || o.ClientSecretFile != "" || len(c.AllowedGroups) > 0 || len(c.OpsGroups) > 0 {
			return fmt.Errorf("oidc.issuer: required when other identity keys are set")
		}
		return nil
	}
	u, err := url.Parse(o.Issuer)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "":
		add("oidc.issuer: %q is not an https URL without query or fragment", o.Issuer)
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		add("oidc.issuer: %q must use https (plain http only on loopback, for tests)", o.Issuer)
	case strings.EqualFold(u.Hostname(), entraHost):
		tenant, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		switch strings.ToLower(tenant) {
		case "", "common", "organizations", "consumers":
			add("oidc.issuer: Entra ID needs the tenant's own issuer, https://%s/TENANT-ID/v2.0 (not %s: tokens from those name each user's own tenant)", entraHost, entraMultiTenantIssuer)
		default:
			if !strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/v2.0") {
				add("oidc.issuer: Entra ID's issuer ends in /v2.0 (https://%s/%s/v2.0); the v1 endpoints have no device flow this gateway speaks", entraHost, tenant)
			}
		}
	}
	if o.ClientID == "" {
		add("oidc.client_id: required when oidc.issuer is set")
	}
	if o.ClientSecretFile != "" {
		if _, err := os.Stat(o.ClientSecretFile); err != nil {
			add("oidc.client_secret_file: %w", err)
		}
	}
	if c := o.UsernameClaim; c != "" && !validClaimName(c) {
		add("oidc.username_claim: %q is not a claim name (letters, digits, _ - . :)", c)
	}
	if len(o.Scopes) > 0 && !slices.Contains(o.Scopes, "openid") {
		add("oidc.scopes: must include openid (without it no ID token is issued)")
	}
	for i, d := range o.UsernameDomains {
		if d == "" || strings.ContainsAny(d, "@ /") {
			add("oidc.username_domains[%d]: %q is not a domain name (write contoso.com)", i, d)
		}
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{
		{"key_ttl", c.KeyTTL}, {"oidc.request_timeout", o.RequestTimeout}, {"device_limit.window", c.DeviceLimit.Window},
	} {
		if v.d < 0 {
			add("%s: must not be negative, got %s", v.key, v.d)
		}
	}
	for _, v := range []struct {
		key string
		n   int
	}{
		{"device_limit.per_address", c.DeviceLimit.PerAddress}, {"device_limit.total", c.DeviceLimit.Total},
	} {
		if v.n < 0 {
			add("%s: must not be negative, got %d", v.key, v.n)
		}
	}
	for _, g := range []struct {
		key  string
		list []string
	}{{"allowed_groups", c.AllowedGroups}, {"ops_groups", c.OpsGroups}} {
		for i, name := range g.list {
			if strings.TrimSpace(name) == "" {
				add("%s[%d]: empty group", g.key, i)
			}
		}
	}
	return errors.Join(errs...)
}

// readSecret reads the client secret file, trimmed of surrounding white
// space; "" when no file is configured.
func (o OIDCConfig) readSecret() (string, error) {
	if o.ClientSecretFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(o.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("reading identity.oidc.client_secret_file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("identity.oidc.client_secret_file %s is empty", o.ClientSecretFile)
	}
	return s, nil
}

func isLoopbackHost(h string) bool {
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}

// validClaimName reports whether c looks like a claim name: 1 to 64
// letters, digits and _ - . :.
func validClaimName(c string) bool {
	return c != "" && len(c) <= 64 && !strings.ContainsFunc(c, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.:", r))
	})
}
