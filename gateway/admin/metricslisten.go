package admin

import (
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// MetricsHandler serves admin.metrics_listen: GET (or HEAD) /metrics and
// /healthz, behind metrics_token_file when it is set, and nothing else
// (404; other methods 405). It reads and changes nothing of the pool
// beyond what /metrics exports, and answers only the host names the
// admin API answers (421 otherwise), so a rebound DNS name cannot read
// it from a browser.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", s.scrape(s.metricsHandler))
	mux.HandleFunc("/healthz", s.scrape(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "uptime_seconds": int(time.Since(s.startedAt).Seconds())})
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "this listener (admin.metrics_listen) serves only GET /metrics and /healthz")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r.Host) {
			s.log.Info("metrics request with a foreign Host refused", hostField(r.Host), clientField(r))
			writeError(w, http.StatusMisdirectedRequest, "this listener does not answer for the host name "+quoteHost(r.Host)+"; add it to admin.hosts if it is yours")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// scrape wraps an endpoint of the metrics listener: GET or HEAD only,
// with the metrics token when one is configured.
func (s *Server) scrape(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; this listener only reads")
			return
		}
		if tok := s.tok.Load().metrics; len(tok) > 0 {
			got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), tok) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="poolgate metrics"`)
				writeError(w, http.StatusUnauthorized, "a valid bearer token is required (the one in admin.metrics_token_file)")
				return
			}
		}
		h(w, r)
	}
}

// MetricsTLSConfig is the metrics listener's TLS configuration, nil when
// it serves plain HTTP.
func (s *Server) MetricsTLSConfig() *tls.Config {
	if s.metricsCert == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.metricsCert.get}
}

// certFiles is a certificate and key read from files, read again when
// either file changes (checked at most every few seconds, on a
// handshake). A change that does not load keeps the certificate in use.
type certFiles struct {
	certFile, keyFile string
	log               *zap.Logger

	mu      sync.Mutex // protects the fields below
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times when cert was read
	checked time.Time
}

const certCheckEvery = 5 * time.Second

func loadCertFiles(certFile, keyFile string, log *zap.Logger) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := c.stampNow()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

func (c *certFiles) stampNow() (string, error) {
	var b strings.Builder
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d/%d ", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < certCheckEvery {
		return c.cert, nil
	}
	c.checked = time.Now()
	stamp, err := c.stampNow()
	if err != nil || stamp == c.stamp {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.log.Error("metrics_tls_cert_file changed but does not load; still serving the previous certificate", zap.Error(err))
		return c.cert, nil
	}
	c.cert, c.stamp = &cert, stamp
	c.log.Info("metrics listener's certificate reloaded")
	return c.cert, nil
}
