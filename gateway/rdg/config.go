package rdg

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config is the YAML section "rdp.gateway": the RD Gateway on the HTTP
// front end's port.
type Config struct {
	// Enabled turns the RD Gateway on (at /remoteDesktopGateway/ on
	// http.listen, which must be set). Default off.
	Enabled bool `yaml:"enabled"`
	// Address is the gateway as .rdp files name it (gatewayhostname):
	// the pool's public host name, with :port unless 443. Required for
	// `poolgate rdp-file`; the users' page uses the host the browser
	// asked for when it is empty.
	Address string `yaml:"address"`
	// Target is the name .rdp files give as the computer to reach (full
	// address). The gateway takes a channel only to this name or the
	// name of the user's own node: it is no open relay. Default "pool".
	Target string `yaml:"target"`
	// TokenTTL is how long a token is good for opening a connection (a
	// connection once open lasts). Default 10m.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// HandshakeTimeout bounds the time from the client's request to its
	// channel to the node. Default 15s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes a tunnel that moved no byte either way for this
	// long. 0 (default): never; clients send keepalives.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxPending caps tunnels not yet past their token, in all and per
	// client address (IPv6 by /64). Defaults 256 and 16.
	MaxPending           int `yaml:"max_pending"`
	MaxPendingPerAddress int `yaml:"max_pending_per_address"`
	// ConnectTimeout bounds connecting to the node. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.Target == "" {
		c.Target = "pool"
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = 10 * time.Minute
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 15 * time.Second
	}
	if c.MaxPending == 0 {
		c.MaxPending = 256
	}
	if c.MaxPendingPerAddress == 0 {
		c.MaxPendingPerAddress = 16
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	return c
}

// Validate reports every bad setting, naming its key (under rdp.gateway).
func (c Config) Validate() error {
	var errs []error
	for _, v := range []struct {
		key string
		d   time.Duration
	}{{"token_ttl", c.TokenTTL}, {"handshake_timeout", c.HandshakeTimeout}, {"idle_timeout", c.IdleTimeout}, {"connect_timeout", c.ConnectTimeout}} {
		if v.d < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", v.key, v.d))
		}
	}
	if c.IdleTimeout > 0 && c.IdleTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("idle_timeout: %s is shorter than 100ms (0 turns it off)", c.IdleTimeout))
	}
	if c.TokenTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("token_ttl: %s is longer than a day; a token is for opening a connection within minutes", c.TokenTTL))
	}
	if c.MaxPending < 0 || c.MaxPendingPerAddress < 0 {
		errs = append(errs, errors.New("max_pending, max_pending_per_address: must not be negative"))
	}
	if c.Address != "" {
		if err := checkHostPort(c.Address); err != nil {
			errs = append(errs, fmt.Errorf("address: %w", err))
		}
	}
	if c.Target != "" && (strings.ContainsAny(c.Target, " :/\\\r\n") || len(c.Target) > 253) {
		errs = append(errs, fmt.Errorf("target: %q is not a host name", c.Target))
	}
	return errors.Join(errs...)
}

// checkHostPort accepts host or host:port, as gatewayhostname holds.
func checkHostPort(a string) error {
	host := a
	if h, p, err := net.SplitHostPort(a); err == nil {
		host = h
		if p == "" {
			return fmt.Errorf("%q has an empty port", a)
		}
	}
	if host == "" || strings.ContainsAny(host, " /\\\r\n") {
		return fmt.Errorf("%q is not a host name with an optional port", a)
	}
	return nil
}

// sameName compares host names as Windows does: ignoring case.
func sameName(a, b string) bool { return a != "" && strings.EqualFold(a, b) }
