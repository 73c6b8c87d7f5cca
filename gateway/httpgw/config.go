package httpgw

import (
	"errors"
	"fmt"
	"time"

	"github.com/poolgate/poolgate/internal/netx"
)

// Config is the YAML section "http".
type Config struct {
	// Listen is the address browsers connect to, e.g. 0.0.0.0:443. Empty
	// (the default) turns the HTTP gateway off.
	Listen string `yaml:"listen"`
	// TLS serves HTTPS (HTTP/2 and HTTP/1.1). Default true; false serves
	// plain HTTP, for tests or behind another TLS terminator.
	TLS *bool `yaml:"tls"`
	// CertFile and KeyFile are the PEM certificate chain and key. They are
	// reloaded on SIGHUP and when the files change. When both are empty, a
	// self-signed certificate is created in state_dir on first start.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// UpstreamTLS speaks HTTPS to the nodes' hubs (DSVMs serve JupyterHub
	// over HTTPS with a self-signed certificate). Default true.
	UpstreamTLS *bool `yaml:"upstream_tls"`
	// UpstreamCAFile verifies the hubs' certificates against this PEM CA
	// bundle. Without it (and without upstream_insecure_skip_verify) each
	// node's certificate fingerprint is recorded on first contact, in
	// state_dir, and a changed certificate is refused.
	UpstreamCAFile string `yaml:"upstream_ca_file"`
	// UpstreamFingerprints gives nodes' certificate fingerprints up
	// front: node name → "sha256:<hex>" of the DER certificate.
	UpstreamFingerprints map[string]string `yaml:"upstream_fingerprints"`
	// UpstreamPins is the old name of upstream_fingerprints, still read
	// (with a warning at start); give one or the other.
	UpstreamPins map[string]string `yaml:"upstream_pins"`
	// UpstreamInsecureSkipVerify accepts any hub certificate. Default false.
	UpstreamInsecureSkipVerify bool `yaml:"upstream_insecure_skip_verify"`
	// UpstreamTimeout bounds connecting to a hub. Default 10s.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// MaxIdlePerNode is how many idle keep-alive connections to each hub
	// are kept for reuse. Default 1024.
	MaxIdlePerNode int `yaml:"max_idle_per_node"`
	// SessionIdle is how long after a user's last request, with no
	// WebSocket or event stream open, their HTTP session ends. Default 10m.
	SessionIdle time.Duration `yaml:"session_idle"`
	// MaxLoginForm caps the size of a POST /hub/login body the gateway
	// reads to learn the user name; larger bodies get 413. Default 64 KiB.
	MaxLoginForm int `yaml:"max_login_form"`
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	// There is deliberately no read or write timeout for whole requests:
	// it would cut WebSockets. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes browser keep-alive connections idle this long.
	// Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// AccessLog logs one line per request (user, node, method, path
	// without query, status, duration). Default true.
	AccessLog *bool `yaml:"access_log"`
	// HSTSMaxAge is the max-age of the Strict-Transport-Security header
	// sent with every HTTPS answer. Default one year (8760h); 0 sends no
	// header. Ignored without TLS.
	HSTSMaxAge *time.Duration `yaml:"hsts_max_age"`
}

func boolPtr(b bool) *bool { return &b }

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.TLS == nil {
		c.TLS = boolPtr(true)
	}
	if c.UpstreamTLS == nil {
		c.UpstreamTLS = boolPtr(true)
	}
	if c.AccessLog == nil {
		c.AccessLog = boolPtr(true)
	}
	if c.HSTSMaxAge == nil {
		year := 365 * 24 * time.Hour
		c.HSTSMaxAge = &year
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 10 * time.Second
	}
	if c.MaxIdlePerNode == 0 {
		c.MaxIdlePerNode = 1024
	}
	if c.SessionIdle == 0 {
		c.SessionIdle = 10 * time.Minute
	}
	if c.MaxLoginForm == 0 {
		c.MaxLoginForm = 64 << 10
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	return c
}

// Enabled reports whether the HTTP gateway is configured.
func (c Config) Enabled() bool { return c.Listen != "" }

// Validate reports every bad setting (joined, one error each), naming its key.
func (c Config) Validate() error {
	var errs []error
	if err := netx.CheckListenAddr(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		if c.CertFile == "" {
			errs = append(errs, fmt.Errorf("cert_file: needed with key_file"))
		} else {
			errs = append(errs, fmt.Errorf("key_file: needed with cert_file"))
		}
	}
	if c.UpstreamInsecureSkipVerify && c.UpstreamCAFile != "" {
		errs = append(errs, fmt.Errorf("upstream_insecure_skip_verify: conflicts with upstream_ca_file; choose one"))
	}
	if c.UpstreamTimeout < 0 {
		errs = append(errs, fmt.Errorf("upstream_timeout: must be positive, got %s", c.UpstreamTimeout))
	}
	if c.MaxIdlePerNode < 0 {
		errs = append(errs, fmt.Errorf("max_idle_per_node: must be 0 or more, got %d", c.MaxIdlePerNode))
	}
	if c.SessionIdle < 0 {
		errs = append(errs, fmt.Errorf("session_idle: must be positive, got %s", c.SessionIdle))
	}
	if c.MaxLoginForm < 0 {
		errs = append(errs, fmt.Errorf("max_login_form: must be positive, got %d", c.MaxLoginForm))
	}
	if c.ReadHeaderTimeout < 0 {
		errs = append(errs, fmt.Errorf("read_header_timeout: must be positive, got %s", c.ReadHeaderTimeout))
	}
	if c.HSTSMaxAge != nil && *c.HSTSMaxAge < 0 {
		errs = append(errs, fmt.Errorf("hsts_max_age: must be 0 (no header) or more, got %s", *c.HSTSMaxAge))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle_timeout: must be positive, got %s", c.IdleTimeout))
	}
	if len(c.UpstreamPins) > 0 && len(c.UpstreamFingerprints) > 0 {
		errs = append(errs, fmt.Errorf("upstream_pins: the old name of upstream_fingerprints; give only upstream_fingerprints"))
	}
	for node, fp := range c.UpstreamFingerprints {
		if _, err := parseFingerprint(fp); err != nil {
			errs = append(errs, fmt.Errorf("upstream_fingerprints.%s: %v", node, err))
		}
	}
	for node, fp := range c.UpstreamPins {
		if _, err := parseFingerprint(fp); err != nil {
			errs = append(errs, fmt.Errorf("upstream_pins.%s: %v", node, err))
		}
	}
	return errors.Join(errs...)
}

// fingerprints is upstream_fingerprints, or upstream_pins, its old name,
// with the key it came from.
func (c Config) fingerprints() (fps map[string]string, key string) {
	if len(c.UpstreamPins) > 0 {
		return c.UpstreamPins, "upstream_pins"
	}
	return c.UpstreamFingerprints, "upstream_fingerprints"
}
