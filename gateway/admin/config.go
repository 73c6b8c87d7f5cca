package admin

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/poolgate/poolgate/internal/netx"
)

// Config is the YAML section "admin".
type Config struct {
	// Listen is the admin API's address. Default 127.0.0.1:9090.
	Listen string `yaml:"listen"`
	// TokenFile holds the token that may read and change state (drain).
	// Required when Listen is not a loopback address.
	TokenFile string `yaml:"token_file"`
	// ReadTokenFile holds a token that may only read (for dashboards and
	// monitoring). Optional.
	ReadTokenFile string `yaml:"read_token_file"`
	// Hosts are further host names the API answers for (the Host header
	// of a request), beyond the listen address, loopback names and IP
	// literals: e.g. the gateway's DNS name when ops reach the API by it.
	// Other names get 421, so a rebound DNS name cannot reach the API.
	Hosts []string `yaml:"hosts"`

	// MetricsListen, if set, is a second, read-only listener for
	// monitoring: it serves GET /metrics and GET /healthz and nothing
	// else (404), so a remote Prometheus needs neither the admin API nor
	// its tokens. Default "" (off). The admin API keeps 127.0.0.1:9090,
	// Prometheus's own port; a Prometheus on this host scrapes e.g.
	// 127.0.0.1:9469, a remote one 0.0.0.0:9469 with a token.
	MetricsListen string `yaml:"metrics_listen"`
	// MetricsTokenFile holds the bearer token a scrape must send on
	// metrics_listen (Prometheus: authorization.credentials_file).
	// Required when metrics_listen is not a loopback address; without it
	// a loopback metrics_listen is open to local processes.
	MetricsTokenFile string `yaml:"metrics_token_file"`
	// MetricsTLSCertFile and MetricsTLSKeyFile (PEM), if set, make
	// metrics_listen serve HTTPS, so the token does not cross the network
	// in clear. Both or neither; the files are read again when they
	// change (a renewed certificate needs no restart).
	MetricsTLSCertFile string `yaml:"metrics_tls_cert_file"`
	MetricsTLSKeyFile  string `yaml:"metrics_tls_key_file"`
}

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9090"
	}
	return c
}

// Validate reports every bad setting (joined, one error each), naming its key.
func (c Config) Validate() error {
	var errs []error
	if err := c.validateMetrics(); err != nil {
		errs = append(errs, err)
	}
	if c.Listen == "" {
		return errors.Join(errs...)
	}
	if err := netx.CheckListenAddr(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if host, _, _ := net.SplitHostPort(c.Listen); !IsLoopback(host) && c.TokenFile == "" {
		errs = append(errs, fmt.Errorf("token_file: required when listen (%s) is not a loopback address: the admin API can drain nodes", c.Listen))
	}
	for i, h := range c.Hosts {
		if h == "" || strings.ContainsAny(h, ":/ ") {
			errs = append(errs, fmt.Errorf("hosts[%d]: %q is not a host name (no port, scheme or path)", i, h))
		}
	}
	if c.ReadTokenFile != "" && c.TokenFile == "" {
		errs = append(errs, fmt.Errorf("read_token_file: set token_file too: without it the API is open and a read-only token means nothing"))
	}
	return errors.Join(errs...)
}

// validateMetrics checks the metrics_* keys: a listener off loopback
// needs a token, as the admin API does, and TLS needs both files.
func (c Config) validateMetrics() error {
	if c.MetricsListen == "" {
		for _, k := range []struct{ key, v string }{{"metrics_token_file", c.MetricsTokenFile}, {"metrics_tls_cert_file", c.MetricsTLSCertFile}, {"metrics_tls_key_file", c.MetricsTLSKeyFile}} {
			if k.v != "" {
				return fmt.Errorf("%s: set metrics_listen too: it applies only to the metrics listener, which is off", k.key)
			}
		}
		return nil
	}
	if err := netx.CheckListenAddr(c.MetricsListen); err != nil {
		return fmt.Errorf("metrics_listen: %w", err)
	}
	if _, port, _ := net.SplitHostPort(c.MetricsListen); c.MetricsListen == c.Listen && port != "0" {
		return fmt.Errorf("metrics_listen: %s is admin.listen's address; give the metrics listener a port of its own (e.g. 127.0.0.1:9469)", c.MetricsListen)
	}
	if host, _, _ := net.SplitHostPort(c.MetricsListen); !IsLoopback(host) && c.MetricsTokenFile == "" {
		return fmt.Errorf("metrics_token_file: required when metrics_listen (%s) is not a loopback address: the metrics name every node and its load", c.MetricsListen)
	}
	switch {
	case c.MetricsTLSCertFile != "" && c.MetricsTLSKeyFile == "":
		return fmt.Errorf("metrics_tls_key_file: required with metrics_tls_cert_file")
	case c.MetricsTLSKeyFile != "" && c.MetricsTLSCertFile == "":
		return fmt.Errorf("metrics_tls_cert_file: required with metrics_tls_key_file")
	}
	return nil
}

// IsLoopback reports whether host names only this machine.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
