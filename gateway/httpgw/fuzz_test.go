package httpgw

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// FuzzPlainHTTPSniff feeds any bytes to the TLS port's plain-HTTP
// answer: it answers with a status line, never a Location outside
// https:// plus a clean host, and does not panic.
func FuzzPlainHTTPSniff(f *testing.F) {
	f.Add([]byte("GET /user/alice/?x=1 HTTP/1.1\r\nHost: pool.example.com\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: evil\r\n\tinjected: 1\r\n\r\n"))
	f.Add([]byte("GET /\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("\x00\x01\x02"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	l := &sniffListener{Listener: ln, sniffWithin: 5 * time.Second}
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		go func() { _, _ = client.Write(in); _ = client.Close() }()
		lr := &io.LimitedReader{R: server, N: maxHeaderBytes + plainSlack}
		br := bufio.NewReaderSize(lr, 1024)
		out := make(chan []byte, 1)
		c2, c1 := net.Pipe()
		go func() { b, _ := io.ReadAll(c2); out <- b }()
		l.answerPlain(c1, br, lr)
		c1.Close()
		server.Close()
		answer := string(<-out)
		if !strings.HasPrefix(answer, "HTTP/1.1 ") {
			t.Fatalf("answer %q", answer)
		}
		for _, line := range strings.Split(answer, "\r\n") {
			if loc, ok := strings.CutPrefix(line, "Location: "); ok {
				host, _, _ := strings.Cut(strings.TrimPrefix(loc, "https://"), "/")
				if !strings.HasPrefix(loc, "https://") || !validHost(host) {
					t.Fatalf("Location %q", loc)
				}
			}
		}
	})
}

// FuzzLoadHubFingerprints feeds any file to the learned-fingerprints
// loader.
func FuzzLoadHubFingerprints(f *testing.F) {
	f.Add([]byte(`{"node-1":"sha256:00"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"a":5}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "http_hub_fingerprints.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := loadHubFingerprints(dir, map[string]string{"node-9": "sha256:" + strings.Repeat("ab", 32)}, "upstream_fingerprints", zap.NewNop())
		if err != nil {
			return
		}
		if p.known["node-9"] != "sha256:"+strings.Repeat("ab", 32) {
			t.Fatalf("the configured fingerprint was overridden by the file: %q", p.known["node-9"])
		}
		_ = p.check("node-1", []byte("der"))
	})
}
