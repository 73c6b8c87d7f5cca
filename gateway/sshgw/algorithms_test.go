package sshgw

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestWeakAlgorithmsRefused is what ssh-audit checks: a client that offers
// only SHA-1 key exchange or MACs gets no session, and the post-quantum key
// exchange is chosen when the client offers it.
func TestWeakAlgorithmsRefused(t *testing.T) {
	g := newTestGW(t, nil)
	dial := func(cfg ssh.Config) (*ssh.Client, error) {
		return ssh.Dial("tcp", g.addr, &ssh.ClientConfig{
			User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(g.userKey)}, Config: cfg,
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
		})
	}
	for name, cfg := range map[string]ssh.Config{
		"diffie-hellman-group14-sha1": {KeyExchanges: []string{ssh.InsecureKeyExchangeDH14SHA1}},
		"hmac-sha1-96":                {Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.InsecureHMACSHA196}},
		"hmac-sha1":                   {Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.HMACSHA1}},
	} {
		if c, err := dial(cfg); err == nil {
			c.Close()
			t.Errorf("a client offering only %s got in", name)
		} else if !strings.Contains(err.Error(), "no common algorithm") {
			t.Errorf("%s: %v, want no common algorithm", name, err)
		}
	}
	c, err := dial(ssh.Config{KeyExchanges: []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if kex := c.Conn.(ssh.AlgorithmsConnMetadata).Algorithms().KeyExchange; kex != ssh.KeyExchangeMLKEM768X25519 {
		t.Fatalf("key exchange %s, want %s", kex, ssh.KeyExchangeMLKEM768X25519)
	}
}

func TestAlgorithmsConfig(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.Algorithms.KeyExchanges[0] != ssh.KeyExchangeMLKEM768X25519 {
		t.Fatalf("default kex %v", c.Algorithms.KeyExchanges)
	}
	c.Algorithms.MACs = []string{ssh.HMACSHA256, "hmac-md5"}
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), `algorithms.macs[1]: "hmac-md5" is not`) {
		t.Fatalf("unknown MAC: %v", err)
	}
	c.Algorithms.MACs = []string{ssh.InsecureHMACSHA196} // an operator may turn one back on, knowingly
	if err := c.Validate(); err != nil {
		t.Fatalf("an implemented insecure MAC: %v", err)
	}
}
