package httpgw

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testutil"
)

// dialWebSocket opens an upgraded connection to path through the gateway.
func dialWebSocket(t *testing.T, base, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	u, _ := url.Parse(base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, u.Host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c, br
}

func TestStreamsKeepTheSessionAndIdleEndsIt(t *testing.T) {
	e := newEnv(t, Config{SessionIdle: 150 * time.Millisecond}, false)
	c, br := dialWebSocket(t, e.url, "/user/alice/ws")
	fmt.Fprintf(c, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasSuffix(line, " ping\n") {
		t.Fatalf("echo through the WebSocket: %q %v", line, err)
	}
	node := strings.Fields(line)[0]
	time.Sleep(600 * time.Millisecond) // four idle windows with the socket open
	if got := e.httpSessions()["alice"]; got != node {
		t.Fatalf("with a WebSocket open for longer than the idle window, alice's session is %q, want on %s", got, node)
	}
	// The event stream's first event arrives while the stream stays open.
	resp, err := http.Get(e.url + "/user/bob/api/events")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(ev, "data: node-") {
		t.Fatalf("event stream: %q %v", ev, err)
	}
	if _, ok := e.httpSessions()["bob"]; !ok {
		t.Fatal("bob's open event stream has no session")
	}
	resp.Body.Close()
	c.Close()
	testutil.Eventually(t, 10*time.Second, "sessions to end after the idle window", func() bool { return len(e.httpSessions()) == 0 })
}

func TestShutdownEndsStreams(t *testing.T) {
	e := newEnv(t, Config{}, false)
	c, br := dialWebSocket(t, e.url, "/user/alice/ws")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("the WebSocket stayed open after shutdown")
	}
	if len(e.bal.Sessions()) != 0 {
		t.Fatalf("sessions left after shutdown: %+v", e.bal.Sessions())
	}
}

func TestCloseDoesNotWaitForSilentClients(t *testing.T) {
	e := newEnv(t, Config{TLS: boolPtr(true), ReadHeaderTimeout: time.Minute}, false)
	u, _ := url.Parse(e.url)
	c, err := net.Dial("tcp", u.Host) // connects, never sends a byte
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	_ = e.gw.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %s with a silent client", d)
	}
}
