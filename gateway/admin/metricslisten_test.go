package admin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricsListenConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string // prefix of the error; "" valid
	}{
		{"off", Config{}, ""},
		{"loopback without a token", Config{MetricsListen: "127.0.0.1:9469"}, ""},
		{"remote with a token", Config{MetricsListen: "0.0.0.0:9469", MetricsTokenFile: "/t"}, ""},
		{"remote with TLS and a token", Config{MetricsListen: "[::]:9469", MetricsTokenFile: "/t", MetricsTLSCertFile: "/c", MetricsTLSKeyFile: "/k"}, ""},
		{"remote without a token", Config{MetricsListen: "0.0.0.0:9469"}, "metrics_token_file: required when metrics_listen (0.0.0.0:9469)"},
		{"TLS without a token is still no token", Config{MetricsListen: "0.0.0.0:9469", MetricsTLSCertFile: "/c", MetricsTLSKeyFile: "/k"}, "metrics_token_file: required"},
		{"a bad address", Config{MetricsListen: "9469"}, "metrics_listen:"},
		{"the admin API's address", Config{Listen: "127.0.0.1:9090", MetricsListen: "127.0.0.1:9090"}, "metrics_listen: 127.0.0.1:9090 is admin.listen's address"},
		{"cert without key", Config{MetricsListen: "127.0.0.1:9469", MetricsTLSCertFile: "/c"}, "metrics_tls_key_file: required"},
		{"key without cert", Config{MetricsListen: "127.0.0.1:9469", MetricsTLSKeyFile: "/k"}, "metrics_tls_cert_file: required"},
		{"token without listener", Config{MetricsTokenFile: "/t"}, "metrics_token_file: set metrics_listen too"},
		{"TLS without listener", Config{MetricsTLSCertFile: "/c", MetricsTLSKeyFile: "/k"}, "metrics_tls_cert_file: set metrics_listen too"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.WithDefaults().Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Fatalf("error %v, want %q…", err, tt.want)
			}
		})
	}
}

// metricsServer is an admin API with the metrics listener configured by
// adjust, over the test pool and a registry with the pool's collector.
func metricsServer(t *testing.T, adjust func(*Config)) *Server {
	t.Helper()
	b := testPool(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(b, b))
	cfg := Config{MetricsListen: "127.0.0.1:9469"}.WithDefaults()
	if adjust != nil {
		adjust(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, b, Options{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func metricsRequest(t *testing.T, h http.Handler, method, path, token string) (int, string, http.Header) {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	r.Host = "127.0.0.1:9469"
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body), rec.Header()
}

// The metrics listener serves /metrics and /healthz to GET and nothing
// else: no API, no dashboard, no state change.
func TestMetricsListenServesOnlyMetrics(t *testing.T) {
	h := metricsServer(t, nil).MetricsHandler()
	code, body, _ := metricsRequest(t, h, "GET", "/metrics", "")
	if code != 200 || !strings.Contains(body, `poolgate_node_sessions{node="node-1",protocol="ssh"}`) {
		t.Fatalf("GET /metrics on loopback without a token: %d\n%s", code, body)
	}
	if code, body, _ := metricsRequest(t, h, "GET", "/healthz", ""); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("GET /healthz: %d %s", code, body)
	}
	if code, _, _ := metricsRequest(t, h, "HEAD", "/metrics", ""); code != 200 {
		t.Fatalf("HEAD /metrics: %d", code)
	}
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/", 404},
		{"GET", "/api/nodes", 404},
		{"GET", "/api/sessions", 404},
		{"POST", "/api/nodes/node-1/drain", 404},
		{"POST", "/api/users/alice/pin", 404},
		{"POST", "/login", 404},
		{"GET", "/metrics/extra", 404},
		{"POST", "/metrics", 405},
		{"DELETE", "/metrics", 405},
		{"PUT", "/healthz", 405},
	} {
		code, _, hdr := metricsRequest(t, h, tt.method, tt.path, "")
		if code != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, code, tt.want)
		}
		if tt.want == 405 && hdr.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", tt.method, tt.path, hdr.Get("Allow"))
		}
	}
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.Host = "rebound.example.com"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusMisdirectedRequest {
		t.Errorf("a foreign Host: %d, want 421", rec.Code)
	}
}

func TestMetricsListenToken(t *testing.T) {
	const metricsTok, adminTok = "metrics-token-0123456789", "admin-token-0123456789"
	s := metricsServer(t, func(c *Config) {
		c.Listen, c.TokenFile = "0.0.0.0:9090", writeTok(t, adminTok)
		c.MetricsListen, c.MetricsTokenFile = "0.0.0.0:9469", writeTok(t, metricsTok)
	})
	h := s.MetricsHandler()
	for _, tok := range []string{"", "wrong-token-0123456789", adminTok} {
		code, _, hdr := metricsRequest(t, h, "GET", "/metrics", tok)
		if code != 401 || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("GET /metrics with token %q: %d %q, want 401 with a challenge", tok, code, hdr.Get("WWW-Authenticate"))
		}
	}
	if code, body, _ := metricsRequest(t, h, "GET", "/metrics", metricsTok); code != 200 || !strings.Contains(body, "poolgate_node_state") {
		t.Fatalf("GET /metrics with the metrics token: %d", code)
	}
	if code, _, _ := metricsRequest(t, h, "GET", "/api/nodes", metricsTok); code != 404 {
		t.Errorf("the metrics token on /api/nodes of the metrics listener: %d, want 404", code)
	}
	// The metrics token opens nothing on the admin API.
	r := localRequest("GET", "/api/nodes", nil)
	r.Header.Set("Authorization", "Bearer "+metricsTok)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, r)
	if rec.Code != 401 {
		t.Errorf("the metrics token on the admin API: %d, want 401", rec.Code)
	}
}

// With metrics_tls_cert_file the listener speaks HTTPS, and a renewed
// certificate is served without a restart.
func TestMetricsListenTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, "metrics-one")
	s := metricsServer(t, func(c *Config) { c.MetricsTLSCertFile, c.MetricsTLSKeyFile = certFile, keyFile })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.MetricsHandler(), TLSConfig: s.MetricsTLSConfig(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()
	get := func() (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + ln.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if code, cn := get(); code != 200 || cn != "metrics-one" {
		t.Fatalf("GET https://…/metrics: %d, certificate %q", code, cn)
	}
	writeCert(t, certFile, keyFile, "metrics-two")
	s.metricsCert.mu.Lock()
	s.metricsCert.checked = time.Time{} // as if certCheckEvery had passed
	s.metricsCert.mu.Unlock()
	if code, cn := get(); code != 200 || cn != "metrics-two" {
		t.Fatalf("after renewal: %d, certificate %q, want metrics-two", code, cn)
	}
	// A broken renewal keeps the certificate in use.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.metricsCert.mu.Lock()
	s.metricsCert.checked = time.Time{}
	s.metricsCert.mu.Unlock()
	if code, cn := get(); code != 200 || cn != "metrics-two" {
		t.Fatalf("after a broken key file: %d, certificate %q, want metrics-two still", code, cn)
	}
	if _, err := New(Config{MetricsListen: "127.0.0.1:9469", MetricsTLSCertFile: certFile, MetricsTLSKeyFile: keyFile}.WithDefaults(), testPool(t), Options{}); err == nil || !strings.HasPrefix(err.Error(), "metrics_tls_cert_file:") {
		t.Fatalf("New with a broken key: %v, want a metrics_tls_cert_file error", err)
	}
}

// writeCert writes a self-signed certificate for cn and its key.
func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}
