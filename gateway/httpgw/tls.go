package httpgw

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
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

// certSource serves the front end's certificate and reloads it from its
// files on demand (SIGHUP) or when they change.
type certSource struct {
	certFile, keyFile string
	log               *zap.Logger

	mu    sync.RWMutex
	cert  *tls.Certificate
	stamp string // size and modification times of the files last loaded
}

func fileStamp(paths ...string) string {
	s := ""
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			s += "missing;"
		}
	}
	return s
}

func (c *certSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}

// reload loads the files again. On error the certificate in use stays.
func (c *certSource) reload() error {
	stamp := fileStamp(c.certFile, c.keyFile)
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("loading http.cert_file %s and http.key_file %s: %w", c.certFile, c.keyFile, err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	c.mu.Lock()
	c.cert, c.stamp = &cert, stamp
	c.mu.Unlock()
	if leaf != nil {
		c.log.Info("TLS certificate loaded", zap.String("cert_file", c.certFile),
			zap.Strings("names", leaf.DNSNames), zap.Time("not_after", leaf.NotAfter))
	}
	return nil
}

// watch reloads the files when their size or modification time changes,
// checking every interval until ctx ends.
func (c *certSource) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.RLock()
		old := c.stamp
		c.mu.RUnlock()
		if fileStamp(c.certFile, c.keyFile) != old {
			if err := c.reload(); err != nil {
				c.log.Error("TLS certificate changed on disk but could not be loaded; still serving the previous one", zap.Error(err))
				c.mu.Lock()
				c.stamp = fileStamp(c.certFile, c.keyFile) // report once per change
				c.mu.Unlock()
			}
		}
	}
}

// selfSigned returns the self-signed certificate kept in dir, creating it
// (key 0600) when missing or within 30 days of expiry.
func selfSigned(dir string, hosts []string) (certFile, keyFile string, created bool, err error) {
	certFile, keyFile = filepath.Join(dir, "http_selfsigned.crt"), filepath.Join(dir, "http_selfsigned.key")
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil && time.Until(leaf.NotAfter) > 30*24*time.Hour {
			return certFile, keyFile, false, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", false, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "poolgate self-signed", Organization: []string{"poolgate"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(825 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", false, err
	}
	if err := atomicfile.Write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", false, err
	}
	if err := atomicfile.Write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", false, err
	}
	return certFile, keyFile, true, nil
}

// Fingerprint is the "sha256:<hex>" form of a DER certificate, as used in
// http.upstream_fingerprints and in log lines.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// sniffListener hands TLS connections to the HTTP server and answers
// plain-HTTP requests on the TLS port with a redirect to https, so a
// browser or curl given http:// gets told where to go, not a reset.
type sniffListener struct {
	net.Listener
	tlsConfig   *tls.Config
	sniffWithin time.Duration
	log         *zap.Logger

	conns chan net.Conn
	errc  chan error
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{} // being sniffed; closed by Close
}

func newSniffListener(ln net.Listener, cfg *tls.Config, within time.Duration, log *zap.Logger) *sniffListener {
	l := &sniffListener{Listener: ln, tlsConfig: cfg, sniffWithin: within, log: log,
		conns: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{}), pending: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *sniffListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			l.errc <- err
			return
		}
		l.wg.Add(1)
		go l.sniff(c)
	}
}

// peekedConn replays the bytes read while sniffing.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (l *sniffListener) sniff(c net.Conn) {
	defer l.wg.Done()
	l.mu.Lock()
	if l.pending == nil { // closed
		l.mu.Unlock()
		c.Close()
		return
	}
	l.pending[c] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.pending, c)
		l.mu.Unlock()
	}()
	_ = c.SetReadDeadline(time.Now().Add(l.sniffWithin))
	// A plain-HTTP request head may be as large as a TLS one, no larger:
	// the limit is lifted for TLS.
	lr := &io.LimitedReader{R: c, N: maxHeaderBytes + plainSlack}
	br := bufio.NewReaderSize(lr, 1024)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	if first[0] == 0x16 { // TLS handshake record
		_ = c.SetReadDeadline(time.Time{})
		lr.N = math.MaxInt64
		select {
		case l.conns <- tls.Server(&peekedConn{Conn: c, r: br}, l.tlsConfig):
		case <-l.done:
			c.Close()
		}
		return
	}
	defer c.Close()
	l.answerPlain(c, br, lr)
}

// plainSlack is what a plain-HTTP request head may exceed maxHeaderBytes
// by (the request line), as net/http allows.
const plainSlack = 4096

// answerPlain reads a plain-HTTP request head from br (which reads
// through lr, bounded) and answers it: a redirect to https, 431 for a
// head over the limit, 400 for anything else.
func (l *sniffListener) answerPlain(c net.Conn, br *bufio.Reader, lr *io.LimitedReader) {
	_ = c.SetWriteDeadline(time.Now().Add(l.sniffWithin))
	req, err := http.ReadRequest(br)
	if err != nil {
		if lr.N == 0 {
			_, _ = c.Write([]byte("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nThis port speaks HTTPS, and the request's header is too large.\n"))
			return
		}
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nThis port speaks HTTPS; use https://\n"))
		return
	}
	host := req.Host
	if !validHost(host) {
		host = l.Addr().String()
	}
	uri := req.URL.RequestURI()
	if !strings.HasPrefix(uri, "/") || strings.HasPrefix(uri, "//") {
		uri = "/" // "*", an absolute URL's oddities: the site's root
	}
	loc := "https://" + host + uri
	body := "This port speaks HTTPS: " + loc + "\n"
	fmt.Fprintf(c, "HTTP/1.1 308 Permanent Redirect\r\nLocation: %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", loc, len(body), body)
}

func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		l.errc <- err // every later Accept sees it too
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sniffListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.mu.Lock()
		for c := range l.pending { // slow or silent clients: do not wait out their deadline
			c.Close()
		}
		l.pending = nil
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

// validHost accepts host[:port] made of the characters of DNS names and
// IP literals, so a redirect's Location never carries anything else.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}
