package sshgw

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/netx"
	"github.com/poolgate/poolgate/internal/username"
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
	// MaxUnauthenticated caps connections that have not finished logging
	// in; more are closed at once. Default 256.
	MaxUnauthenticated int `yaml:"max_unauthenticated"`
	// MaxUnauthenticatedPerAddress caps them per client address (IPv6
	// by /64), so that one address cannot take every slot. Default 32;
	// negative means no per-address cap.
	MaxUnauthenticatedPerAddress int `yaml:"max_unauthenticated_per_address"`
	// KeepaliveInterval is how long a connection may be silent before the
	// gateway sends a keepalive on both legs (the user's and the node's),
	// keeping middleboxes' idle timers from cutting it. 0 takes the
	// default 60s; a negative value turns keepalives off.
	KeepaliveInterval time.Duration `yaml:"keepalive_interval"`
	// KeepaliveCountMax is how many keepalives in a row may go unanswered
	// before that leg is taken as dead and the connection closed.
	// Default 3.
	KeepaliveCountMax int `yaml:"keepalive_count_max"`
	// IdleTimeout closes connections that relayed no data for this long.
	// 0 (default) means never.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxSessionsPerUser caps one user's simultaneous SSH connections.
	// 0 (default) means no limit.
	MaxSessionsPerUser int `yaml:"max_sessions_per_user"`
	// SignaturesPerUserPerMinute caps the node-login certificates the
	// user CA signs for one user a minute (a certificate still valid for
	// the same login is reused without one), so that one user cannot
	// spend a Key Vault's shared throttling budget. Default 30; negative
	// means no limit.
	SignaturesPerUserPerMinute int `yaml:"signatures_per_user_per_minute"`
	// AuthBackoff slows down clients that keep failing to log in.
	AuthBackoff BackoffConfig `yaml:"auth_backoff"`
	// Algorithms are offered toward users and used toward nodes.
	Algorithms AlgorithmsConfig `yaml:"algorithms"`
	// NodeSeparator splits a login name into user and chosen node:
	// alice+node-3 logs alice in on node-3 and moves her pin there.
	// Default "+"; empty turns the choice off.
	NodeSeparator *string `yaml:"node_separator"`
	// NodeChoice lets users choose their node with NodeSeparator.
	// Default true; false refuses such logins with a message.
	NodeChoice *bool `yaml:"node_choice"`
}

// separator is the node separator in force, "" when choosing is off.
func (c Config) separator() string {
	if c.NodeSeparator == nil {
		return "+"
	}
	return *c.NodeSeparator
}

// AlgorithmsConfig is the YAML section "ssh.algorithms": the key
// exchanges, ciphers and MACs the gateway offers users and uses toward
// nodes, in order of preference. Empty lists take the defaults, a modern
// set like current OpenSSH's: post-quantum mlkem768x25519 and curve25519
// first, no SHA-1 key exchange or MAC, no CBC.
type AlgorithmsConfig struct {
	KeyExchanges []string `yaml:"kex"`
	Ciphers      []string `yaml:"ciphers"`
	MACs         []string `yaml:"macs"`
}

// Default algorithms (see AlgorithmsConfig).
var (
	DefaultKeyExchanges = []string{
		ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519,
		ssh.KeyExchangeECDHP256, ssh.KeyExchangeECDHP384, ssh.KeyExchangeECDHP521,
		ssh.KeyExchangeDH16SHA512, ssh.KeyExchangeDH14SHA256,
	}
	DefaultCiphers = []string{
		ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305,
		ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR,
	}
	DefaultMACs = []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM, ssh.HMACSHA256, ssh.HMACSHA512}
)

// config is the x/crypto form of the algorithms.
func (a AlgorithmsConfig) config() ssh.Config {
	return ssh.Config{KeyExchanges: a.KeyExchanges, Ciphers: a.Ciphers, MACs: a.MACs}
}

// validate reports a name x/crypto does not implement, naming its key.
func (a AlgorithmsConfig) validate() error {
	sup, insecure := ssh.SupportedAlgorithms(), ssh.InsecureAlgorithms()
	for _, l := range []struct {
		key        string
		names, ok  []string
		okInsecure []string
	}{
		{"kex", a.KeyExchanges, sup.KeyExchanges, insecure.KeyExchanges},
		{"ciphers", a.Ciphers, sup.Ciphers, insecure.Ciphers},
		{"macs", a.MACs, sup.MACs, insecure.MACs},
	} {
		for i, n := range l.names {
			if !slices.Contains(l.ok, n) && !slices.Contains(l.okInsecure, n) {
				return fmt.Errorf("algorithms.%s[%d]: %q is not an algorithm the gateway implements (known: %s)", l.key, i, n, strings.Join(append(slices.Clone(l.ok), l.okInsecure...), ", "))
			}
		}
	}
	return nil
}

// BackoffConfig is the YAML section "ssh.auth_backoff".
type BackoffConfig struct {
	// After is how many failed attempts a client address may make before
	// its failures are answered with a delay. Default 5.
	After int `yaml:"after"`
	// Delay is the first delay; each further failure doubles it.
	// Default 500ms.
	Delay time.Duration `yaml:"delay"`
	// MaxDelay caps the delay. Default 10s.
	MaxDelay time.Duration `yaml:"max_delay"`
	// Forget is how long after its last failure an address starts afresh.
	// Default 15m.
	Forget time.Duration `yaml:"forget"`
	// Allow lists networks (CIDR, e.g. 10.0.0.0/8) never slowed down, such
	// as an office NAT whose many users share one address.
	Allow []string `yaml:"allow"`
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
	if c.MaxUnauthenticated == 0 {
		c.MaxUnauthenticated = 256
	}
	if c.MaxUnauthenticatedPerAddress == 0 {
		c.MaxUnauthenticatedPerAddress = min(32, c.MaxUnauthenticated)
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = 60 * time.Second
	}
	if c.KeepaliveCountMax == 0 {
		c.KeepaliveCountMax = 3
	}
	if c.SignaturesPerUserPerMinute == 0 {
		c.SignaturesPerUserPerMinute = DefaultSignaturesPerUserPerMinute
	}
	a := &c.Algorithms
	if len(a.KeyExchanges) == 0 {
		a.KeyExchanges = DefaultKeyExchanges
	}
	if len(a.Ciphers) == 0 {
		a.Ciphers = DefaultCiphers
	}
	if len(a.MACs) == 0 {
		a.MACs = DefaultMACs
	}
	b := &c.AuthBackoff
	if b.After == 0 {
		b.After = 5
	}
	if b.Delay == 0 {
		b.Delay = 500 * time.Millisecond
	}
	if b.MaxDelay == 0 {
		b.MaxDelay = 10 * time.Second
	}
	if b.Forget == 0 {
		b.Forget = 15 * time.Minute
	}
	return c
}

// Validate reports every bad setting (joined, one error each), naming its key.
func (c Config) Validate() error {
	var errs []error
	if err := netx.CheckListenAddr(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if c.AuthorizedKeys != "" {
		if err := c.AuthorizedKeys.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("authorized_keys: %w", err))
		}
	}
	if c.LoginGraceTime < 0 {
		errs = append(errs, fmt.Errorf("login_grace_time: must be positive, got %s", c.LoginGraceTime))
	}
	if c.UpstreamTimeout < 0 {
		errs = append(errs, fmt.Errorf("upstream_timeout: must be positive, got %s", c.UpstreamTimeout))
	}
	for _, v := range []struct {
		key string
		n   int
	}{
		{"max_auth_tries", c.MaxAuthTries}, {"max_unauthenticated", c.MaxUnauthenticated},
		{"keepalive_count_max", c.KeepaliveCountMax}, {"max_sessions_per_user", c.MaxSessionsPerUser},
		{"auth_backoff.after", c.AuthBackoff.After},
	} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", v.key, v.n))
		}
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{
		{"idle_timeout", c.IdleTimeout}, {"auth_backoff.delay", c.AuthBackoff.Delay},
		{"auth_backoff.max_delay", c.AuthBackoff.MaxDelay}, {"auth_backoff.forget", c.AuthBackoff.Forget},
	} {
		if v.d < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", v.key, v.d))
		}
	}
	if err := c.Algorithms.validate(); err != nil {
		errs = append(errs, err)
	}
	if sep := c.separator(); sep != "" {
		if _, err := username.Canonical("a" + sep + "b"); err == nil || strings.ContainsAny(sep, " \t\n") {
			errs = append(errs, fmt.Errorf("node_separator: %q may appear in user names; use a character that cannot, such as +", sep))
		}
	}
	if c.KeepaliveInterval > 0 && c.KeepaliveInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("keepalive_interval: %s is too short (at least 10ms)", c.KeepaliveInterval))
	}
	for i, cidr := range c.AuthBackoff.Allow {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			errs = append(errs, fmt.Errorf("auth_backoff.allow[%d]: %q is not a network in CIDR form (e.g. 10.0.0.0/8)", i, cidr))
		}
	}
	return errors.Join(errs...)
}
