package httpgw

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/internal/testutil"
)

// countingHub is a hub that counts the connections it accepts.
type countingHub struct {
	srv   *httptest.Server
	conns atomic.Int32
}

func newCountingHub(t *testing.T, tlsHub bool, h http.Handler) *countingHub {
	t.Helper()
	c := &countingHub{srv: httptest.NewUnstartedServer(h)}
	c.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	if tlsHub {
		c.srv.StartTLS()
	} else {
		c.srv.Start()
	}
	t.Cleanup(c.srv.Close)
	return c
}

func hubTransportFor(t *testing.T, cfg Config) *hubTransport {
	t.Helper()
	if cfg.UpstreamTLS == nil {
		cfg.UpstreamTLS = boolPtr(false)
	}
	tr, err := newTransport(cfg.WithDefaults(), t.TempDir(), func(string) string { return "node-1" }, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// do sends one request and reads n bytes of the answer (all when n < 0).
func do(t *testing.T, tr http.RoundTripper, method, url string, body io.Reader, n int) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if n >= 0 {
		r = io.LimitReader(resp.Body, int64(n))
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp, string(b)
}

func TestHubTransportKeepsAndRenewsConnections(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	hub := newCountingHub(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			fmt.Fprint(w, big)
		case "/close":
			w.Header().Set("Connection", "close")
			fmt.Fprint(w, "bye")
		case "/hints":
			w.Header().Set("Link", "</static/a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			fmt.Fprint(w, "after hints")
		case "/same":
			w.WriteHeader(http.StatusNotModified)
		case "/post":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s got %d bytes", r.Method, len(b))
		default:
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
		}
	}))
	tr := hubTransportFor(t, Config{})
	url := hub.srv.URL
	conns := func(want int32, after string) {
		t.Helper()
		if got := hub.conns.Load(); got != want {
			t.Fatalf("after %s the hub has seen %d connections, want %d", after, got, want)
		}
	}

	for i := range 3 {
		if _, body := do(t, tr, "GET", url+"/a", nil, -1); body != "GET /a" {
			t.Fatalf("GET %d: %q", i, body)
		}
	}
	if resp, body := do(t, tr, "HEAD", url+"/a", nil, -1); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do(t, tr, "GET", url+"/same", nil, -1); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("GET /same: %d", resp.StatusCode)
	}
	if resp, body := do(t, tr, "GET", url+"/hints", nil, -1); resp.StatusCode != 200 || body != "after hints" {
		t.Fatalf("after 103 Early Hints: %d %q", resp.StatusCode, body)
	}
	conns(1, "six requests, one at a time")

	// A body read to its end returns its connection; one given up on
	// half-way closes it (draining 1 MiB would cost more).
	if _, body := do(t, tr, "GET", url+"/big", nil, -1); len(body) != len(big) {
		t.Fatalf("GET /big: %d bytes", len(body))
	}
	conns(1, "a whole 1 MiB body")
	if _, body := do(t, tr, "GET", url+"/big", nil, 10); body != "xxxxxxxxxx" {
		t.Fatalf("GET /big, 10 bytes: %q", body)
	}
	do(t, tr, "GET", url+"/a", nil, -1)
	conns(2, "a body closed half-way")

	// The hub says Connection: close.
	if _, body := do(t, tr, "GET", url+"/close", nil, -1); body != "bye" {
		t.Fatalf("GET /close: %q", body)
	}
	do(t, tr, "GET", url+"/a", nil, -1)
	conns(3, "Connection: close")

	// The hub closes its idle connections (a restart, its idle timeout):
	// the next request finds its pooled connection dead and is sent again
	// on a new one, unseen by the browser.
	hub.srv.CloseClientConnections()
	if _, body := do(t, tr, "GET", url+"/a", nil, -1); body != "GET /a" {
		t.Fatalf("GET after the hub closed its connections: %q", body)
	}
	conns(4, "the hub closed its idle connections")

	// Requests with a body, and other methods, take the standard
	// transport; their bodies arrive whole.
	payload := strings.Repeat("p", 300<<10)
	if _, body := do(t, tr, "POST", url+"/post", strings.NewReader(payload), -1); body != fmt.Sprintf("POST got %d bytes", len(payload)) {
		t.Fatalf("POST: %q", body)
	}
	if _, body := do(t, tr, "DELETE", url+"/api/kernels/k1", nil, -1); body != "DELETE /api/kernels/k1" {
		t.Fatalf("DELETE: %q", body)
	}
}

func TestHubTransportCancelAndDeadHub(t *testing.T) {
	release := make(chan struct{})
	hub := newCountingHub(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			fmt.Fprint(w, "start ")
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer close(release)
	tr := hubTransportFor(t, Config{})

	// The browser goes away in the middle of a slow answer: the read
	// ends with the request, and the connection is not reused.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", hub.srv.URL+"/slow", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "start " {
		t.Fatalf("first bytes: %q %v", buf, err)
	}
	read := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); read <- err }()
	cancel()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("a cancelled request's body ended cleanly")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled request's body read did not end")
	}
	resp.Body.Close()
	do(t, tr, "GET", hub.srv.URL+"/a", nil, -1)
	if got := hub.conns.Load(); got != 2 {
		t.Fatalf("the hub has seen %d connections, want 2 (the cancelled one not reused)", got)
	}

	// A hub that accepts and closes at once: an error, not a retry loop.
	var accepted atomic.Int32
	hangsUp := testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) { accepted.Add(1) })
	req, _ = http.NewRequest("GET", "http://"+hangsUp+"/", nil)
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "hub sent nothing") {
		t.Fatalf("a hub that hangs up: %v, want an error saying it sent nothing", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("a new connection that fails was tried %d times, want 1", n)
	}

	// A hub that breaks off in the middle of its second answer, on a
	// reused connection: it has seen the request, so it is not sent again.
	var requests atomic.Int32
	breaks := testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if requests.Add(1) == 1 {
				fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Le")
			return
		}
	})
	do(t, tr, "GET", "http://"+breaks+"/one", nil, -1)
	req, _ = http.NewRequest("GET", "http://"+breaks+"/two", nil)
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("a broken answer was taken")
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("the hub got %d requests, want 2 (a half-answered one is not sent again)", n)
	}
}

func TestHubTransportTLSModes(t *testing.T) {
	hub := newCountingHub(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "over tls") }))
	caFile := func(s *httptest.Server) string {
		p := filepath.Join(t.TempDir(), "ca.pem")
		data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Another self-signed certificate stands for another pool's CA.
	otherCA, _, _, err := selfSigned(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	yes := boolPtr(true)
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"the hub's own CA", Config{UpstreamTLS: yes, UpstreamCAFile: caFile(hub.srv)}, true},
		{"another CA", Config{UpstreamTLS: yes, UpstreamCAFile: otherCA}, false},
		{"insecure_skip_verify", Config{UpstreamTLS: yes, UpstreamInsecureSkipVerify: true}, true},
		{"fingerprint recorded on first contact", Config{UpstreamTLS: yes}, true},
		{"a wrong fingerprint", Config{UpstreamTLS: yes, UpstreamFingerprints: map[string]string{"node-1": "sha256:" + strings.Repeat("ab", 32)}}, false},
		{"a wrong fingerprint, old key", Config{UpstreamTLS: yes, UpstreamPins: map[string]string{"node-1": "sha256:" + strings.Repeat("ab", 32)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := hubTransportFor(t, tc.cfg)
			for _, method := range []string{"GET", "DELETE"} { // both transports
				req, _ := http.NewRequest(method, hub.srv.URL+"/", nil)
				resp, err := tr.RoundTrip(req)
				if !tc.ok {
					if err == nil {
						resp.Body.Close()
						t.Fatalf("%s: the hub was trusted", method)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", method, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "over tls" {
					t.Fatalf("%s: %q", method, b)
				}
			}
		})
	}
	// An address that is no node's hub is refused before connecting.
	tr, err := newTransport(Config{UpstreamTLS: yes}.WithDefaults(), t.TempDir(), func(string) string { return "" }, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	before := hub.conns.Load()
	for _, method := range []string{"GET", "DELETE"} {
		req, _ := http.NewRequest(method, hub.srv.URL+"/", nil)
		if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "not a node's hub address") {
			t.Fatalf("%s to an unknown hub address: %v", method, err)
		}
	}
	if hub.conns.Load() != before {
		t.Fatal("the gateway connected to an address that is no node's hub")
	}
}
