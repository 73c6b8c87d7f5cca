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
	if c.Listen == "" {
		return nil
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

// IsLoopback reports whether host names only this machine.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
