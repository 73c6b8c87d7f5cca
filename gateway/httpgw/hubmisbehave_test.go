package httpgw

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawHub accepts connections on loopback and hands each to serve.
func rawHub(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// readHead reads one request head from br.
func readHead(br *bufio.Reader) error {
	_, err := http.ReadRequest(br)
	return err
}

func TestHubTransportBoundsTheAnswerHead(t *testing.T) {
	cases := map[string]func(c net.Conn){
		"endless header": func(c net.Conn) {
			_ = readHead(bufio.NewReader(c))
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: ")
			chunk := strings.Repeat("a", 64<<10)
			for range 64 { // 4 MiB
				if _, err := io.WriteString(c, chunk); err != nil {
					return
				}
			}
		},
		"endless 1xx": func(c net.Conn) {
			_ = readHead(bufio.NewReader(c))
			for range 1000 {
				if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"); err != nil {
					return
				}
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		},
	}
	for name, serve := range cases {
		t.Run(name, func(t *testing.T) {
			addr := rawHub(t, serve)
			tr := hubTransportFor(t, Config{})
			req, _ := http.NewRequest("GET", "http://"+addr+"/hub/anon", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("a hub sending %s got through: %d", name, resp.StatusCode)
			}
			if !errors.Is(err, errHubHeaderTooLarge) && !errors.Is(err, errHubToo1xx) {
				t.Fatalf("%s: %v, want the transport's own limit", name, err)
			}
		})
	}
}

func TestHubTransportNoticesBytesOnAnIdleConnection(t *testing.T) {
	// The hub answers the first request, then, while the connection is
	// idle in the pool, sends a whole second answer nobody asked for.
	var conns atomic.Int32
	addr := rawHub(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if conns.Add(1) > 1 { // a new connection: an honest hub
			for readHead(br) == nil {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
			}
			return
		}
		if readHead(br) != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
		time.Sleep(50 * time.Millisecond)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
		for readHead(br) == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
		}
	})
	tr := hubTransportFor(t, Config{})
	if _, body := do(t, tr, "GET", "http://"+addr+"/a", nil, -1); body != "first" {
		t.Fatalf("first answer %q", body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for { // wait until the stale answer has arrived on the idle connection
		tr.mu.Lock()
		list := tr.idle[addr]
		arrived := len(list) == 1 && peekable(list[0])
		tr.mu.Unlock()
		if arrived || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, body := do(t, tr, "GET", "http://"+addr+"/b", nil, -1); body != "fresh" {
		t.Fatalf("second request answered %q: bytes sent on an idle connection were taken for its answer", body)
	}
}

// peekable reports whether bytes wait on c's socket (test helper; it
// reads nothing).
func peekable(c *hubConn) bool { return c.dirty() }

// FuzzHubExchange feeds a misbehaving hub's bytes to the transport's
// exchange: whatever the hub sends, the transport returns an answer or
// an error, reads no more than its limits allow, and does not panic.
func FuzzHubExchange(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"))
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\nuntil close"))
	f.Add([]byte("garbage\r\n\r\n"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		client, hub := net.Pipe()
		defer client.Close()
		go func() {
			defer hub.Close()
			_ = readHead(bufio.NewReader(hub))
			_, _ = hub.Write(answer)
		}()
		tr := &hubTransport{maxIdle: 1, idle: map[string][]*hubConn{}}
		c := &hubConn{nc: client}
		c.br = bufio.NewReaderSize(c, 4<<10)
		c.bw = bufio.NewWriterSize(client, 4<<10)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://hub.invalid/x", nil)
		resp, _, err := tr.exchange("hub.invalid:80", c, req)
		if err != nil {
			return
		}
		if resp.StatusCode < 200 {
			t.Fatalf("an informational answer %d was returned as final", resp.StatusCode)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, int64(len(answer))+1))
		resp.Body.Close()
		if len(body) > len(answer) || !bytes.Contains(answer, body) {
			t.Fatalf("body %q is not part of what the hub sent", body)
		}
	})
}
