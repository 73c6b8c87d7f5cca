package httpgw

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/internal/atomicfile"
)

// parsePin reads "sha256:<64 hex digits>" (colons between bytes allowed,
// as openssl prints them).
func parsePin(s string) ([]byte, error) {
	h, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	if !ok {
		return nil, errors.New(`want "sha256:<hex>", as printed by openssl x509 -noout -fingerprint -sha256`)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(h, ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New(`want 32 bytes of hex after "sha256:"`)
	}
	return b, nil
}

// ErrPinMismatch means a hub presented a certificate other than the one
// pinned for its node.
var ErrPinMismatch = errors.New("hub certificate does not match the pinned one")

// hubPins keeps each node's hub certificate fingerprint: those configured,
// and those learned on first contact (saved in state_dir).
type hubPins struct {
	path string
	log  *zap.Logger

	mu     sync.Mutex
	pins   map[string]string // node → "sha256:hex"
	config map[string]bool   // configured, not learned
}

func loadHubPins(dir string, configured map[string]string, log *zap.Logger) (*hubPins, error) {
	p := &hubPins{path: filepath.Join(dir, "http_hub_pins.json"), log: log, pins: map[string]string{}, config: map[string]bool{}}
	data, err := os.ReadFile(p.path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &p.pins); err != nil {
			return nil, fmt.Errorf("%s: %w", p.path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	for node, pin := range configured {
		b, err := parsePin(pin)
		if err != nil {
			return nil, fmt.Errorf("upstream_pins.%s: %w", node, err)
		}
		p.pins[node] = "sha256:" + hex.EncodeToString(b)
		p.config[node] = true
	}
	return p, nil
}

// check compares the node's certificate with its pin, pinning it on first
// contact.
func (p *hubPins) check(node string, der []byte) error {
	got := Fingerprint(der)
	p.mu.Lock()
	defer p.mu.Unlock()
	want, ok := p.pins[node]
	if ok {
		if want != got {
			return fmt.Errorf("%w: node %s presented %s, pinned %s (if the hub's certificate was replaced on purpose, remove the node from %s)", ErrPinMismatch, node, got, want, p.path)
		}
		return nil
	}
	p.pins[node] = got
	learned := map[string]string{}
	for n, pin := range p.pins {
		if !p.config[n] {
			learned[n] = pin
		}
	}
	data, _ := json.MarshalIndent(learned, "", "  ")
	if err := atomicfile.Write(p.path, data, 0o600); err != nil {
		p.log.Error("could not save the hub certificate pin", zap.String("node", node), zap.Error(err))
	}
	p.log.Info("hub certificate pinned on first contact", zap.String("node", node), zap.String("fingerprint", got))
	return nil
}

// newTransport returns the transport to the hubs: hubTransport for
// ordinary reads, over the standard transport for everything else. nodeOf
// names the node behind a host:port (for pinning); it returns "" for an
// unknown address.
func newTransport(cfg Config, stateDir string, nodeOf func(addr string) string, log *zap.Logger) (*hubTransport, error) {
	dialer := &net.Dialer{Timeout: cfg.UpstreamTimeout, KeepAlive: 30 * time.Second}
	std := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConns:        0, // no global cap; per node below
		MaxIdleConnsPerHost: cfg.MaxIdlePerNode,
		IdleConnTimeout:     hubIdleTimeout,
		TLSHandshakeTimeout: cfg.UpstreamTimeout,
		// Jupyter speaks HTTP/1.1; WebSocket upgrades need it.
		ForceAttemptHTTP2:      false,
		DisableCompression:     true, // pass the browser's Accept-Encoding through
		MaxResponseHeaderBytes: maxHubHeader,
	}
	t := &hubTransport{std: std, dial: dialer.DialContext, maxIdle: cfg.MaxIdlePerNode, idle: map[string][]*hubConn{}}
	if !*cfg.UpstreamTLS {
		return t, nil
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	// verify returns the certificate check for a hub at addr, or an error
	// before any connection is made.
	var verify func(addr string) (func(tls.ConnectionState) error, error)
	switch {
	case cfg.UpstreamInsecureSkipVerify:
		verify = func(string) (func(tls.ConnectionState) error, error) { return nil, nil }
	case cfg.UpstreamCAFile != "":
		pem, err := os.ReadFile(cfg.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream_ca_file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream_ca_file: %s holds no PEM certificate", cfg.UpstreamCAFile)
		}
		// Hub certificates name the VM, not the private address the
		// gateway dials: verify the chain against the pool's own CA and
		// leave the name out.
		check := func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("hub sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
		verify = func(string) (func(tls.ConnectionState) error, error) { return check, nil }
	default:
		pins, err := loadHubPins(stateDir, cfg.UpstreamPins, log)
		if err != nil {
			return nil, err
		}
		verify = func(addr string) (func(tls.ConnectionState) error, error) {
			node := nodeOf(addr)
			if node == "" {
				return nil, fmt.Errorf("%s is not a node's hub address", addr)
			}
			return func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("hub sent no certificate")
				}
				return pins.check(node, cs.PeerCertificates[0].Raw)
			}, nil
		}
	}
	t.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		check, err := verify(addr)
		if err != nil {
			return nil, err
		}
		raw, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.InsecureSkipVerify = true // the check below replaces name checks
		c.VerifyConnection = check
		c.ServerName, _, _ = net.SplitHostPort(addr) // no SNI is sent for an IP
		conn := tls.Client(raw, c)
		hctx, cancel := context.WithTimeout(ctx, cfg.UpstreamTimeout)
		defer cancel()
		if err := conn.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, err
		}
		return conn, nil
	}
	std.DialTLSContext = t.dial
	return t, nil
}
