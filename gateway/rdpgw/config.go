package rdpgw

import (
	"errors"
	"fmt"
	"time"

	"github.com/poolgate/poolgate/gateway/rdg"
	"github.com/poolgate/poolgate/internal/netx"
)

// Config is the YAML section "rdp".
type Config struct {
	// Listen is the address plain RDP clients connect to, e.g.
	// 0.0.0.0:3389. Empty (the default) turns plain RDP off. Plain RDP
	// proves no user: see the package doc. The RD Gateway (Gateway) is
	// the way in that does.
	Listen string `yaml:"listen"`
	// Gateway is the RD Gateway on the HTTP front end's port (section
	// "rdp.gateway", validated by the app under that name).
	Gateway rdg.Config `yaml:"gateway"`
	// IdleTimeout closes connections that relayed no byte either way for
	// this long. 0 (default) means never.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// FirstPacketTimeout bounds the wait for the client's first packet
	// (the X.224 Connection Request). Default 10s.
	FirstPacketTimeout time.Duration `yaml:"first_packet_timeout"`
	// MaxFirstPacket bounds the first packet's size in bytes. Default
	// 1024 (clients send well under 200).
	MaxFirstPacket int `yaml:"max_first_packet"`
	// ConnectTimeout bounds connecting to the node. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxUnproven caps connections not yet proven (see ProofTime); more
	// are closed at once. Default 256.
	MaxUnproven int `yaml:"max_unproven"`
	// MaxUnprovenPerAddress caps them per client address (IPv6 by /64).
	// Default 16.
	MaxUnprovenPerAddress int `yaml:"max_unproven_per_address"`
	// ProofTime and ProofBytes define when the node has kept a connection
	// past authentication: it is still open ProofTime after its first
	// packet went to the node, the client has sent more than that packet
	// and the node has sent at least ProofBytes. Only then does it take a
	// lease and a pin. Defaults 3s and 16384.
	ProofTime  time.Duration `yaml:"proof_time"`
	ProofBytes int64         `yaml:"proof_bytes"`
	// ProofTimeout closes a connection not proven this long after it was
	// accepted. Default 2m.
	ProofTimeout time.Duration `yaml:"proof_timeout"`
}

// Enabled reports whether the RDP gateway is on (Listen is set).
func (c Config) Enabled() bool { return c.Listen != "" }

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	c.Gateway = c.Gateway.WithDefaults()
	if c.FirstPacketTimeout == 0 {
		c.FirstPacketTimeout = 10 * time.Second
	}
	if c.MaxFirstPacket == 0 {
		c.MaxFirstPacket = 1024
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxUnproven == 0 {
		c.MaxUnproven = 256
	}
	if c.MaxUnprovenPerAddress == 0 {
		c.MaxUnprovenPerAddress = 16
	}
	if c.ProofTime == 0 {
		c.ProofTime = 3 * time.Second
	}
	if c.ProofBytes == 0 {
		c.ProofBytes = 16384
	}
	if c.ProofTimeout == 0 {
		c.ProofTimeout = 2 * time.Minute
	}
	return c
}

// Validate reports every bad setting (joined, one error each), naming its key.
func (c Config) Validate() error {
	var errs []error
	if err := netx.CheckListenAddr(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{
		{"idle_timeout", c.IdleTimeout}, {"first_packet_timeout", c.FirstPacketTimeout},
		{"connect_timeout", c.ConnectTimeout}, {"proof_time", c.ProofTime}, {"proof_timeout", c.ProofTimeout},
	} {
		if v.d < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", v.key, v.d))
		}
	}
	for _, v := range []struct {
		key string
		n   int64
	}{
		{"max_first_packet", int64(c.MaxFirstPacket)}, {"max_unproven", int64(c.MaxUnproven)},
		{"max_unproven_per_address", int64(c.MaxUnprovenPerAddress)}, {"proof_bytes", c.ProofBytes},
	} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", v.key, v.n))
		}
	}
	if c.MaxFirstPacket != 0 && c.MaxFirstPacket < minPacketLen {
		errs = append(errs, fmt.Errorf("max_first_packet: %d is too small for a Connection Request (at least %d)", c.MaxFirstPacket, minPacketLen))
	}
	if c.MaxFirstPacket > 65535 {
		errs = append(errs, fmt.Errorf("max_first_packet: %d is more than a TPKT packet can hold (65535)", c.MaxFirstPacket))
	}
	if c.ProofTimeout != 0 && c.ProofTime != 0 && c.ProofTimeout <= c.ProofTime {
		errs = append(errs, fmt.Errorf("proof_timeout: %s must be longer than proof_time %s", c.ProofTimeout, c.ProofTime))
	}
	return errors.Join(errs...)
}
