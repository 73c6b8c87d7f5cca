package httpgw

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestPlainHTTPOnTheTLSPortIsBounded(t *testing.T) {
	e := newEnv(t, Config{TLS: boolPtr(true)}, false)
	u, _ := url.Parse(e.url)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A 1 MiB header line: read up to the limit, then 431.
	go func() {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nX-Big: ", u.Host)
		chunk := strings.Repeat("a", 64<<10)
		for range 16 {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
		io.WriteString(c, "\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a plain request with a 1 MiB header: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("plain request with a 1 MiB header: %d, want 431", resp.StatusCode)
	}
}

func TestTLSOffersOnlyAEADSuites(t *testing.T) {
	e := newEnv(t, Config{TLS: boolPtr(true)}, false)
	u, _ := url.Parse(e.url)
	cbc := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
	c, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: cbc})
	if err == nil {
		suite := tls.CipherSuiteName(c.ConnectionState().CipherSuite)
		c.Close()
		t.Fatalf("a TLS 1.2 client offering only CBC and RSA key exchange got %s", suite)
	}
	c, err = tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2 with the default suites: %v", err)
	}
	c.Close()
}

func TestHSTS(t *testing.T) {
	e := newEnv(t, Config{TLS: boolPtr(true)}, false)
	for _, path := range []string{"/hub/anon", "/user/%2e%2e/"} { // the hub's answer and the gateway's own page
		_, _, resp := e.get(e.browser(), path)
		if got := resp.Header.Values("Strict-Transport-Security"); len(got) != 1 || got[0] != "max-age=31536000" {
			t.Fatalf("%s: Strict-Transport-Security %q, want max-age=31536000 (one year)", path, got)
		}
	}
	off := time.Duration(0)
	e = newEnv(t, Config{TLS: boolPtr(true), HSTSMaxAge: &off}, false)
	if _, _, resp := e.get(e.browser(), "/hub/anon"); resp.Header.Get("Strict-Transport-Security") != "" {
		t.Fatalf("hsts_max_age 0 still sends %q", resp.Header.Get("Strict-Transport-Security"))
	}
	e = newEnv(t, Config{}, false) // plain HTTP: no HSTS
	if _, _, resp := e.get(e.browser(), "/hub/anon"); resp.Header.Get("Strict-Transport-Security") != "" {
		t.Fatalf("plain HTTP sends %q", resp.Header.Get("Strict-Transport-Security"))
	}
}
