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
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/internal/atomicfile"
)

// parseFingerprint reads "sha256:<64 hex digits>" (colons between bytes
// allowed, as openssl prints them).
func parseFingerprint(s string) ([]byte, error) {
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

// ErrFingerprintMismatch means a hub presented a certificate other than
// the one known for its node.
var ErrFingerprintMismatch = errors.New("hub certificate does not match its known fingerprint")

// Files in state_dir of the hub certificate fingerprints learned on first
// contact. The old name is read when the new file is missing, and copied
// to the new one (the old file is left as it was, for a downgrade).
const (
	hubFingerprintsFile    = "http_hub_fingerprints.json"
	oldHubFingerprintsFile = "http_hub_pins.json"
)

// hubFingerprints keeps each node's hub certificate fingerprint: those
// configured, and those learned on first contact (saved in state_dir).
type hubFingerprints struct {
	path string
	log  *zap.Logger

	mu     sync.Mutex
	known  map[string]string // node → "sha256:hex"
	config map[string]bool   // configured, not learned
}

// loadHubFingerprints reads the learned fingerprints from dir and adds
// the configured ones (key is their config key, for errors).
func loadHubFingerprints(dir string, configured map[string]string, key string, log *zap.Logger) (*hubFingerprints, error) {
	p := &hubFingerprints{path: filepath.Join(dir, hubFingerprintsFile), log: log, known: map[string]string{}, config: map[string]bool{}}
	from := p.path
	data, err := os.ReadFile(from)
	if errors.Is(err, fs.ErrNotExist) {
		from = filepath.Join(dir, oldHubFingerprintsFile)
		data, err = os.ReadFile(from)
	}
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &p.known); err != nil {
			return nil, fmt.Errorf("%s: %w", from, err)
		}
		if from != p.path {
			if err := atomicfile.Write(p.path, data, 0o600); err != nil {
				log.Warn("could not copy the hub certificate fingerprints to their new file; still using the old one", zap.String("file", from), zap.Error(err))
				p.path = from
			} else {
				log.Info("hub certificate fingerprints copied to their new file; the old one is no longer read", zap.String("from", from), zap.String("to", p.path))
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	for node, fp := range configured {
		b, err := parseFingerprint(fp)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", key, node, err)
		}
		p.known[node] = "sha256:" + hex.EncodeToString(b)
		p.config[node] = true
	}
	return p, nil
}

// reload reads the learned fingerprints again and takes the configured
// ones anew (a reload): a node whose line ops deleted after its hub's
// certificate was replaced is learnt again on first contact. It returns
// the nodes forgotten; on an error nothing changes.
func (p *hubFingerprints) reload(configured map[string]string, key string) (forgotten []string, err error) {
	p.mu.Lock()
	dir := filepath.Dir(p.path)
	p.mu.Unlock()
	fresh, err := loadHubFingerprints(dir, configured, key, p.log)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := range p.known {
		if _, ok := fresh.known[n]; !ok {
			forgotten = append(forgotten, n)
		}
	}
	sort.Strings(forgotten)
	p.known, p.config = fresh.known, fresh.config
	return forgotten, nil
}

// check compares the node's certificate with its known fingerprint,
// recording it on first contact.
func (p *hubFingerprints) check(node string, der []byte) error {
	got := Fingerprint(der)
	p.mu.Lock()
	defer p.mu.Unlock()
	want, ok := p.known[node]
	if ok {
		if want != got {
			return fmt.Errorf("%w: node %s presented %s, known %s (if the hub's certificate was replaced on purpose, remove the node from %s)", ErrFingerprintMismatch, node, got, want, p.path)
		}
		return nil
	}
	p.known[node] = got
	learned := map[string]string{}
	for n, fp := range p.known {
		if !p.config[n] {
			learned[n] = fp
		}
	}
	data, _ := json.MarshalIndent(learned, "", "  ")
	if err := atomicfile.Write(p.path, data, 0o600); err != nil {
		p.log.Error("could not save the hub certificate fingerprint", zap.String("node", node), zap.Error(err))
	}
	p.log.Info("hub certificate fingerprint recorded on first contact", zap.String("node", node), zap.String("fingerprint", got))
	return nil
}

// newTransport returns the transport to the hubs: hubTransport for
// ordinary reads, over the standard transport for everything else. nodeOf
// names the node behind a host:port (for its known fingerprint); it
// returns "" for an unknown address.
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
		configured, key := cfg.fingerprints()
		fps, err := loadHubFingerprints(stateDir, configured, key, log)
		if err != nil {
			return nil, err
		}
		t.fps = fps
		verify = func(addr string) (func(tls.ConnectionState) error, error) {
			node := nodeOf(addr)
			if node == "" {
				return nil, fmt.Errorf("%s is not a node's hub address", addr)
			}
			return func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("hub sent no certificate")
				}
				return fps.check(node, cs.PeerCertificates[0].Raw)
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
