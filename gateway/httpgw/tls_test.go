package httpgw

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/testutil"
)

// The self-signed private key is written through a fresh temporary file:
// a leftover or planted file at the fixed name "<key>.tmp" neither widens
// the key's mode nor receives the key.
func TestSelfSignedKeyIgnoresAFixedTempName(t *testing.T) {
	t.Run("leftover file", func(t *testing.T) {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "http_selfsigned.key")
		if err := os.WriteFile(keyFile+".tmp", []byte("half a key from a crash"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := selfSigned(dir, []string{"localhost"}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(keyFile)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("self-signed key: mode %v, %v; want 0600", fi.Mode().Perm(), err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "http_selfsigned.key")
		foreign := filepath.Join(t.TempDir(), "world-readable")
		if err := os.WriteFile(foreign, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(foreign, keyFile+".tmp"); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := selfSigned(dir, []string{"localhost"}); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(foreign); len(got) != 0 {
			t.Fatalf("the private key was written through the symlink into %s", foreign)
		}
		fi, err := os.Lstat(keyFile)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Fatalf("self-signed key: %v, %v; want a regular 0600 file", fi, err)
		}
	})
}

func TestTLSFrontEnd(t *testing.T) {
	e := newEnv(t, Config{TLS: boolPtr(true)}, false)
	c := e.browser()
	code, _, resp := e.get(c, "/hub/anon")
	if code != 200 || resp.Proto != "HTTP/2.0" {
		t.Fatalf("over TLS: %d %s, want 200 over HTTP/2", code, resp.Proto)
	}
	if c := resp.Header.Get("Set-Cookie"); !strings.Contains(c, "Secure") {
		t.Fatalf("affinity cookie over TLS is not Secure: %q", c)
	}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	if code, _, resp := e.get(h1, "/hub/anon"); code != 200 || resp.Proto != "HTTP/1.1" {
		t.Fatalf("HTTP/1.1 over TLS: %d %s", code, resp.Proto)
	}
	// Plain HTTP to the TLS port is redirected, not reset.
	plain := strings.Replace(e.url, "https://", "http://", 1)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(plain + "/user/alice/?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 308 || resp.Header.Get("Location") != e.url+"/user/alice/?x=1" {
		t.Fatalf("plain HTTP on the TLS port: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// WebSockets work over TLS too (HTTP/1.1 upgrade).
	u, _ := url.Parse(e.url)
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /user/alice/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", u.Host)
	br := bufio.NewReader(conn)
	if r, err := http.ReadResponse(br, nil); err != nil || r.StatusCode != 101 {
		t.Fatalf("upgrade over TLS: %v %v", r, err)
	}
	fmt.Fprintf(conn, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || !strings.HasSuffix(line, "hello\n") {
		t.Fatalf("echo over TLS: %q %v", line, err)
	}
}

func TestSelfSignedAndReload(t *testing.T) {
	dir := t.TempDir()
	bal := balancer.New(balancer.Config{}, balancer.Options{})
	core, logs := observer.New(zap.InfoLevel)
	s, err := New(Config{Listen: "127.0.0.1:0", UpstreamTLS: boolPtr(false)}, bal, Options{StateDir: dir, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	fi, err := os.Stat(filepath.Join(dir, "http_selfsigned.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("self-signed key: %v %v", fi, err)
	}
	if logs.FilterMessageSnippet("self-signed").Len() != 1 {
		t.Fatalf("no log line about the self-signed certificate: %v", logs.All())
	}

	// Files configured: a change on disk is picked up without a restart.
	certDir := t.TempDir()
	c1, k1, _, err := selfSigned(t.TempDir(), []string{"one.example"})
	if err != nil {
		t.Fatal(err)
	}
	c2, k2, _, _ := selfSigned(t.TempDir(), []string{"two.example"})
	cert, key := filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key")
	copyFile(t, c1, cert)
	copyFile(t, k1, key)
	e := newEnv(t, Config{TLS: boolPtr(true), CertFile: cert, KeyFile: key}, false)
	served := func() string {
		u, _ := url.Parse(e.url)
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].DNSNames[0]
	}
	if got := served(); got != "one.example" {
		t.Fatalf("served %s", got)
	}
	copyFile(t, k2, key)
	copyFile(t, c2, cert)
	testutil.Eventually(t, 10*time.Second, "the new certificate to be served", func() bool { return served() == "two.example" })
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		t.Fatal(err)
	}
}
