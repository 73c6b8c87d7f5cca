package sshgw

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// Config is the YAML section "ssh".
type Config struct {
	// Listen is the address users connect to. Default 0.0.0.0:22.
	Listen string `yaml:"listen"`
	// AuthorizedKeys is the path template of each user's authorized_keys
	// file; {user} is the login name. Default
	// /home/{user}/.ssh/authorized_keys.
	AuthorizedKeys KeysTemplate `yaml:"authorized_keys"`
	// PasswordPassthrough offers password and keyboard-interactive login;
	// the password is tried on the chosen node, which verifies it. The
	// gateway never stores or logs it. Default false.
	PasswordPassthrough bool `yaml:"password_passthrough"`
	// LoginGraceTime bounds the handshake and authentication, including
	// the login to the node. Default 30s.
	LoginGraceTime time.Duration `yaml:"login_grace_time"`
	// UpstreamTimeout bounds connecting and logging in to a node.
	// Default 10s.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// MaxAuthTries is how many failed authentication attempts a
	// connection may make. Default 6 (as sshd).
	MaxAuthTries int `yaml:"max_auth_tries"`
}

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "0.0.0.0:22"
	}
	if c.AuthorizedKeys == "" {
		c.AuthorizedKeys = "/home/{user}/.ssh/authorized_keys"
	}
	if c.LoginGraceTime == 0 {
		c.LoginGraceTime = 30 * time.Second
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 10 * time.Second
	}
	if c.MaxAuthTries == 0 {
		c.MaxAuthTries = 6
	}
	return c
}

// Validate reports the first bad setting, naming its key.
func (c Config) Validate() error {
	if c.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("listen: %q is not host:port: %v", c.Listen, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("listen: %q: port must be a number from 0 to 65535", c.Listen)
		}
	}
	if c.AuthorizedKeys != "" {
		if err := c.AuthorizedKeys.Validate(); err != nil {
			return fmt.Errorf("authorized_keys: %w", err)
		}
	}
	if c.LoginGraceTime < 0 {
		return fmt.Errorf("login_grace_time: must be positive, got %s", c.LoginGraceTime)
	}
	if c.UpstreamTimeout < 0 {
		return fmt.Errorf("upstream_timeout: must be positive, got %s", c.UpstreamTimeout)
	}
	if c.MaxAuthTries < 0 {
		return fmt.Errorf("max_auth_tries: must be 1 or more, got %d", c.MaxAuthTries)
	}
	return nil
}
