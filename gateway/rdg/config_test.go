package rdg

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	want := Config{
		Target:               "pool",
		TokenTTL:             10 * time.Minute,
		HandshakeTimeout:     15 * time.Second,
		MaxPending:           256,
		MaxPendingPerAddress: 16,
		ConnectTimeout:       10 * time.Second,
	}
	if c != want {
		t.Fatalf("defaults %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	// Set values are kept.
	set := Config{Enabled: true, Address: "gw.example:8443", Target: "desk", TokenTTL: time.Minute, HandshakeTimeout: time.Second,
		IdleTimeout: time.Hour, MaxPending: 3, MaxPendingPerAddress: 1, ConnectTimeout: 2 * time.Second}
	if got := set.WithDefaults(); got != set {
		t.Fatalf("WithDefaults changed set values: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		key  string // "" means valid
	}{
		{"negative token_ttl", Config{TokenTTL: -time.Second}, "token_ttl"},
		{"token_ttl over a day", Config{TokenTTL: 25 * time.Hour}, "token_ttl"},
		{"token_ttl a day", Config{TokenTTL: 24 * time.Hour}, ""},
		{"negative handshake_timeout", Config{HandshakeTimeout: -1}, "handshake_timeout"},
		{"negative idle_timeout", Config{IdleTimeout: -time.Minute}, "idle_timeout"},
		{"negative connect_timeout", Config{ConnectTimeout: -time.Minute}, "connect_timeout"},
		{"negative max_pending", Config{MaxPending: -1}, "max_pending"},
		{"negative max_pending_per_address", Config{MaxPendingPerAddress: -1}, "max_pending_per_address"},
		{"address with an empty port", Config{Address: "gw.example:"}, "address"},
		{"address with a path", Config{Address: "gw.example/x"}, "address"},
		{"address with a space", Config{Address: "gw example"}, "address"},
		{"address port only", Config{Address: ":443"}, "address"},
		{"address with a line break", Config{Address: "gw.example\r\nx"}, "address"},
		{"address host", Config{Address: "gw.example"}, ""},
		{"address host:port", Config{Address: "gw.example:8443"}, ""},
		{"address IPv6", Config{Address: "[2001:db8::1]:443"}, ""},
		{"target with a colon", Config{Target: "pool:3389"}, "target"},
		{"target with a slash", Config{Target: "a/b"}, "target"},
		{"target too long", Config{Target: strings.Repeat("a", 254)}, "target"},
		{"target", Config{Target: "desk.example"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.WithDefaults().Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error naming %s", tc.key)
			}
			if !strings.Contains(err.Error(), tc.key+":") && !strings.Contains(err.Error(), tc.key+",") {
				t.Fatalf("error %q does not name %s", err, tc.key)
			}
		})
	}
}

// Every bad key is reported at once, one line each.
func TestConfigValidateReportsAll(t *testing.T) {
	err := Config{TokenTTL: -1, IdleTimeout: -1, Address: "a b", Target: "x:y"}.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, key := range []string{"token_ttl", "idle_timeout", "address", "target"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	s := &Signer{Key: testKey}
	if _, err := New(Config{TokenTTL: -1}, nil, s, Options{}); err == nil || !strings.Contains(err.Error(), "token_ttl") {
		t.Fatalf("New with a bad config: %v", err)
	}
	g := newGW(t, Config{})
	if _, err := New(Config{}, g.bal, nil, Options{}); err == nil {
		t.Fatal("New without a signer succeeded")
	}
	if _, err := New(Config{}, g.bal, &Signer{Key: []byte("short")}, Options{}); err == nil {
		t.Fatal("New with a short key succeeded")
	}
	if _, err := New(Config{}, nil, s, Options{}); err == nil {
		t.Fatal("New without a balancer succeeded")
	}
	if c := g.srv.Config(); c.Target != "pool" || c.TokenTTL != 10*time.Minute {
		t.Fatalf("Server.Config() %+v lacks the defaults", c)
	}
	tok, claims, err := g.srv.Issue("Bob", "")
	if err != nil || claims.User != "bob" || claims.Expires-claims.Issued != int64((10*time.Minute)/time.Second) {
		t.Fatalf("Server.Issue: %+v %v", claims, err)
	}
	if _, err := g.signer.Verify(tok); err != nil {
		t.Fatal(err)
	}
}
