package rdg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"go.uber.org/goleak"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait of these tests for something the gateway does.
const wait = 5 * time.Second

// testKey is the token key of the gateway under test.
var testKey = bytes.Repeat([]byte("k"), MinKeyLen)

// gw is a gateway under test: an RD Gateway behind an httptest server, a
// real balancer with one node "n1" whose RDP port is an echo server.
type gw struct {
	srv    *Server
	ts     *httptest.Server
	bal    *balancer.Balancer
	signer *Signer
	node   string // the node's RDP address
	nodeMu sync.Mutex
	nodeIn []net.Conn // node-side connections accepted
}

func newGW(t *testing.T, cfg Config) *gw {
	t.Helper()
	return newGWOn(t, cfg, nil, Options{})
}

// newGWOn is newGW with the HTTP server's listener wrapped by wrap (if
// not nil) and the server's options opts.
func newGWOn(t *testing.T, cfg Config, wrap func(net.Listener) net.Listener, opts Options) *gw {
	t.Helper()
	g := &gw{signer: &Signer{Key: testKey}}
	g.node = testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		g.nodeMu.Lock()
		g.nodeIn = append(g.nodeIn, c)
		g.nodeMu.Unlock()
		_, _ = io.Copy(c, c)
	})
	g.bal = balancer.New(balancer.Config{}, balancer.Options{})
	g.bal.SetNodes([]balancer.Node{{Name: "n1", SSH: "127.0.0.1:1", RDP: g.node}})
	g.bal.SetHealth("n1", balancer.SSH, true, "ok")
	g.bal.SetHealth("n1", balancer.RDP, true, "ok")
	srv, err := New(cfg, g.bal, g.signer, opts)
	if err != nil {
		t.Fatal(err)
	}
	g.srv = srv
	g.ts = httptest.NewUnstartedServer(srv)
	if wrap != nil {
		g.ts.Listener = wrap(g.ts.Listener)
	}
	g.ts.Start()
	// Cleanups run last first: the gateway's tunnels end, then the HTTP
	// server, then the node (registered above) waits for its handlers.
	t.Cleanup(g.ts.Close)
	t.Cleanup(func() { _ = srv.Close() })
	return g
}

func (g *gw) addr() string { return g.ts.Listener.Addr().String() }

func (g *gw) token(t *testing.T, user string) string {
	t.Helper()
	tok, _, err := g.signer.Issue(user, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rdpSessions are the balancer's RDP sessions.
func (g *gw) rdpSessions() []balancer.SessionInfo {
	var out []balancer.SessionInfo
	for _, s := range g.bal.Sessions() {
		if s.Protocol == balancer.RDP {
			out = append(out, s)
		}
	}
	return out
}

// settled waits until the gateway holds no tunnel, no pre-auth slot and
// no session.
func (g *gw) settled(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, wait, "no tunnel, pending slot or session left", func() bool {
		return g.srv.Open() == 0 && g.srv.Pending() == 0 && len(g.rdpSessions()) == 0
	})
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * wait))
	t.Cleanup(func() { c.Close() })
	return c
}

// ---- packets as FreeRDP 2.11 builds them (spec §4) ----

func pkt(typ uint16, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	binary.LittleEndian.PutUint16(b, typ)
	binary.LittleEndian.PutUint32(b[4:], uint32(8+len(body)))
	return append(b, body...)
}

// utf16z is s as UTF-16LE with a final NUL, as FreeRDP sends strings.
func utf16z(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return append(b, 0, 0)
}

func handshakeReq(extAuth uint16) []byte {
	return pkt(pktHandshakeRequest, []byte{1, 0, 0, 0, byte(extAuth), byte(extAuth >> 8)})
}

func tunnelCreateReq(token string) []byte {
	c := utf16z(token)
	b := binary.LittleEndian.AppendUint32(nil, 0x0D)
	b = binary.LittleEndian.AppendUint16(b, tunnelCreatePAACookie)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(c)))
	return pkt(pktTunnelCreate, append(b, c...))
}

func tunnelAuthReq(name string) []byte {
	n := utf16z(name)
	b := binary.LittleEndian.AppendUint16(nil, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(n)))
	return pkt(pktTunnelAuth, append(b, n...))
}

func channelCreateReq(host string, port uint16) []byte {
	n := utf16z(host)
	b := []byte{1, 0}
	b = binary.LittleEndian.AppendUint16(b, port)
	b = binary.LittleEndian.AppendUint16(b, 3)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(n)))
	return pkt(pktChannelCreate, append(b, n...))
}

func dataReq(p []byte) []byte {
	return pkt(pktData, append(binary.LittleEndian.AppendUint16(nil, uint16(len(p))), p...))
}

// readPkt reads one gateway packet from a byte stream, checking its
// header as FreeRDP does.
func readPkt(r io.Reader) (uint16, []byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if n < 8 || n > 1<<20 {
		return 0, nil, fmt.Errorf("gateway sent a packet length %d", n)
	}
	if h[2] != 0 || h[3] != 0 {
		return 0, nil, fmt.Errorf("gateway sent reserved bytes % x", h[2:4])
	}
	body := make([]byte, n-8)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return binary.LittleEndian.Uint16(h[:]), body, nil
}

// ---- the two transports, client side ----

type client interface {
	send(p []byte) error
	stream() io.Reader // the gateway's packets, back to back
	close()
}

func recvPkt(t *testing.T, c client) (uint16, []byte) {
	t.Helper()
	typ, body, err := readPkt(c.stream())
	if err != nil {
		t.Fatalf("reading the gateway's packet: %v", err)
	}
	return typ, body
}

// expectClosed asserts the gateway ends the connection (EOF or reset, not
// our deadline) without another packet.
func expectClosed(t *testing.T, c client) {
	t.Helper()
	typ, body, err := readPkt(c.stream())
	if err == nil {
		t.Fatalf("gateway sent packet type %#x (% x), want the connection closed", typ, body)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("gateway left the connection open: %v", err)
	}
}

func connectionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("{%x-%x-%x-%x-%x}", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

const commonHeaders = "Cache-Control: no-cache\r\nPragma: no-cache\r\nAccept: */*\r\nUser-Agent: MS-RDGateway/1.0\r\nHost: gw.example\r\n"

// legacyClient speaks the two-connection transport (spec §2).
type legacyClient struct {
	out, in net.Conn
	outR    *bufio.Reader
}

// dialLegacyOut opens the OUT channel and reads the 200 and the seed.
func dialLegacyOut(t *testing.T, g *gw, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	out := dialTCP(t, g.addr())
	req := "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\n" + commonHeaders +
		"Connection: Keep-Alive\r\nRDG-Connection-Id: " + id + "\r\nRDG-Auth-Scheme: PAA\r\nContent-Length: 0\r\n\r\n"
	if _, err := io.WriteString(out, req); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	status, hdr := readHead(t, r)
	if status != "HTTP/1.1 200 OK" {
		t.Fatalf("RDG_OUT_DATA answered %q, want HTTP/1.1 200 OK", status)
	}
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Content-Type"} {
		if v := hdr.Get(k); v != "" {
			t.Errorf("RDG_OUT_DATA answer has %s: %s; FreeRDP needs an open-ended identity body", k, v)
		}
	}
	seed := make([]byte, seedLen)
	if _, err := io.ReadFull(r, seed); err != nil {
		t.Fatalf("reading the 10 seed bytes: %v", err)
	}
	return out, r
}

// readHead reads a response head the way FreeRDP does: up to the blank
// line, nothing past it.
func readHead(t *testing.T, r *bufio.Reader) (string, http.Header) {
	t.Helper()
	status := ""
	h := http.Header{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer's head: %v (got %q)", err, line)
		}
		if !strings.HasSuffix(line, "\r\n") {
			t.Fatalf("answer line %q does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			return status, h
		}
		if status == "" {
			status = line
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("answer header line %q has no colon", line)
		}
		h.Add(k, strings.TrimSpace(v))
	}
}

func dialLegacy(t *testing.T, g *gw) *legacyClient {
	t.Helper()
	id := connectionID()
	out, outR := dialLegacyOut(t, g, id)
	in := dialTCP(t, g.addr())
	head := "RDG_IN_DATA /remoteDesktopGateway/ HTTP/1.1\r\n" + commonHeaders +
		"Connection: Keep-Alive\r\nRDG-Connection-Id: " + id + "\r\nRDG-Auth-Scheme: PAA\r\n"
	if _, err := io.WriteString(in, head+"Content-Length: 0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	inR := bufio.NewReader(in)
	status, hdr := readHead(t, inR)
	if status != "HTTP/1.1 200 OK" || hdr.Get("Content-Length") != "0" {
		// A 400 here, now and then, is the race TestLegacyINRightAfterSeed
		// shows: the OUT channel is registered after its seed went out.
		t.Fatalf("first RDG_IN_DATA answered %q %v, want 200 with Content-Length: 0", status, hdr)
	}
	if _, err := io.WriteString(in, head+"Transfer-Encoding: chunked\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return &legacyClient{out: out, in: in, outR: outR}
}

// send writes one packet as one chunk, as rdg_write_chunked does.
func (c *legacyClient) send(p []byte) error {
	_, err := fmt.Fprintf(c.in, "%X\r\n%s\r\n", len(p), p)
	return err
}

func (c *legacyClient) stream() io.Reader { return c.outR }
func (c *legacyClient) close()            { c.in.Close(); c.out.Close() }

// wsClient speaks the WebSocket transport as FreeRDP 2.11 does (spec §3):
// an RDG_OUT_DATA upgrade with a 15-character key that is not base64,
// masked binary frames of one packet each.
type wsClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	fr   *frameReader
}

const freerdpKey = `XB\EMUNXBTNPFRE`

func wsUpgradeRequest(id string) string {
	return "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\n" + commonHeaders +
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-Websocket-Version: 13\r\nSec-Websocket-Key: " + freerdpKey + "\r\n" +
		"RDG-Connection-Id: " + id + "\r\nRDG-Auth-Scheme: PAA\r\nContent-Length: 0\r\n\r\n"
}

func dialWS(t *testing.T, g *gw) *wsClient {
	t.Helper()
	c, status, hdr := tryWS(t, g)
	if status != "HTTP/1.1 101 Switching Protocols" {
		t.Fatalf("upgrade answered %q, want HTTP/1.1 101 Switching Protocols", status)
	}
	sum := sha1.Sum([]byte(freerdpKey + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := hdr.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q (of the key as sent)", got, want)
	}
	if v := hdr.Get("Sec-WebSocket-Version"); v != "" && v != "13" {
		t.Fatalf("Sec-WebSocket-Version %q", v)
	}
	return c
}

// tryWS sends the upgrade and reads the answer's head.
func tryWS(t *testing.T, g *gw) (*wsClient, string, http.Header) {
	t.Helper()
	conn := dialTCP(t, g.addr())
	if _, err := io.WriteString(conn, wsUpgradeRequest(connectionID())); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	status, hdr := readHead(t, r)
	c := &wsClient{t: t, conn: conn, r: r}
	c.fr = &frameReader{c: c}
	return c, status, hdr
}

// send writes p as one masked binary frame.
func (c *wsClient) send(p []byte) error {
	f := []byte{0x82}
	switch n := len(p); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xFFFF:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	f = append(f, mask[:]...)
	for i, b := range p {
		f = append(f, b^mask[i%4])
	}
	_, err := c.conn.Write(f)
	return err
}

func (c *wsClient) stream() io.Reader { return c.fr }
func (c *wsClient) close()            { c.conn.Close() }

// frameReader is the payload of the gateway's data frames as one stream;
// a masked frame from the gateway is an error, as it is to FreeRDP.
type frameReader struct {
	c    *wsClient
	left uint64
}

func (f *frameReader) Read(p []byte) (int, error) {
	for f.left == 0 {
		var h [2]byte
		if _, err := io.ReadFull(f.c.r, h[:]); err != nil {
			return 0, err
		}
		if h[1]&0x80 != 0 {
			return 0, errors.New("the gateway sent a masked frame")
		}
		n := uint64(h[1] & 0x7F)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(f.c.r, b[:]); err != nil {
				return 0, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(f.c.r, b[:]); err != nil {
				return 0, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		switch op := h[0] & 0x0F; op {
		case 0, 2:
			f.left = n
		case 8:
			return 0, io.EOF
		default:
			// Ping, pong, text: FreeRDP answers pings; these tests skip
			// them.
			if _, err := io.CopyN(io.Discard, f.c.r, int64(n)); err != nil {
				return 0, err
			}
		}
	}
	if uint64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.c.r.Read(p)
	f.left -= uint64(n)
	return n, err
}

type transport struct {
	name string
	dial func(t *testing.T, g *gw) client
}

var transports = []transport{
	{"websocket", func(t *testing.T, g *gw) client { return dialWS(t, g) }},
	{"legacy", func(t *testing.T, g *gw) client { return dialLegacy(t, g) }},
}

func status32(t *testing.T, body []byte, off int) uint32 {
	t.Helper()
	if len(body) < off+4 {
		t.Fatalf("packet body % x too short for a status at %d", body, off)
	}
	return binary.LittleEndian.Uint32(body[off:])
}

func mustSend(t *testing.T, c client, p []byte) {
	t.Helper()
	if err := c.send(p); err != nil {
		t.Fatalf("sending packet type %#x: %v", binary.LittleEndian.Uint16(p), err)
	}
}

// handshake runs the handshake and expects success.
func handshake(t *testing.T, c client) {
	t.Helper()
	mustSend(t, c, handshakeReq(extAuthPAA))
	typ, body := recvPkt(t, c)
	if typ != pktHandshakeResponse || len(body) < 10 {
		t.Fatalf("handshake answered type %#x % x, want a handshake response of 10 bytes", typ, body)
	}
	if s := status32(t, body, 0); s != 0 {
		t.Fatalf("handshake response status %#x, want 0", s)
	}
	if ext := binary.LittleEndian.Uint16(body[8:]); ext != extAuthPAA {
		t.Errorf("handshake response extended auth %#x, want PAA", ext)
	}
}

// tunnelUp runs handshake, tunnel create with token and tunnel auth,
// expecting success.
func tunnelUp(t *testing.T, c client, token string) {
	t.Helper()
	handshake(t, c)
	mustSend(t, c, tunnelCreateReq(token))
	typ, body := recvPkt(t, c)
	if typ != pktTunnelResponse {
		t.Fatalf("tunnel create answered type %#x, want a tunnel response", typ)
	}
	if s := status32(t, body, 2); s != 0 {
		t.Fatalf("tunnel response status %#x, want 0", s)
	}
	mustSend(t, c, tunnelAuthReq("vm"))
	typ, body = recvPkt(t, c)
	if typ != pktTunnelAuthResponse {
		t.Fatalf("tunnel auth answered type %#x, want a tunnel auth response", typ)
	}
	if s := status32(t, body, 0); s != 0 {
		t.Fatalf("tunnel auth response status %#x, want 0", s)
	}
}

// channelUp opens the channel to host and expects success.
func channelUp(t *testing.T, c client, host string) {
	t.Helper()
	mustSend(t, c, channelCreateReq(host, 3389))
	typ, body := recvPkt(t, c)
	if typ != pktChannelResponse {
		t.Fatalf("channel create answered type %#x, want a channel response", typ)
	}
	if s := status32(t, body, 0); s != 0 {
		t.Fatalf("channel response status %#x, want 0", s)
	}
}

// echo sends p in data packets of at most 65535 bytes and reads it back
// from the echo node, checking each data packet's length field.
func echo(t *testing.T, c client, p []byte) {
	t.Helper()
	for rest := p; len(rest) > 0; {
		n := min(len(rest), 0xFFFF)
		mustSend(t, c, dataReq(rest[:n]))
		rest = rest[n:]
	}
	var got []byte
	for len(got) < len(p) {
		typ, body := recvPkt(t, c)
		if typ == pktKeepalive {
			continue
		}
		if typ != pktData {
			t.Fatalf("gateway sent type %#x while relaying, want data", typ)
		}
		cb := int(binary.LittleEndian.Uint16(body))
		if cb+2 != len(body) || cb == 0 {
			t.Fatalf("data packet of %d bytes carries cbLen %d: FreeRDP would lose the stream", len(body)+8, cb)
		}
		got = append(got, body[2:]...)
	}
	if !bytes.Equal(got, p) {
		t.Fatalf("relayed %d bytes came back different", len(p))
	}
}

func TestTunnelRelaysAndCountsTheSession(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			g := newGW(t, Config{})
			c := tr.dial(t, g)
			tunnelUp(t, c, g.token(t, "Alice"))
			if n := g.srv.Pending(); n != 0 {
				t.Errorf("Pending() = %d after the token was taken, want 0", n)
			}
			channelUp(t, c, "pool")

			// The first data is the X.224 connection request; then a
			// large write the node echoes in pieces.
			echo(t, c, []byte("\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x0b\x00\x00\x00"))
			big := make([]byte, 100_000)
			_, _ = rand.Read(big)
			echo(t, c, big)

			s := g.rdpSessions()
			if len(s) != 1 || s[0].User != "alice" || s[0].Node != "n1" {
				t.Fatalf("balancer sessions %+v, want one RDP session of alice on n1", s)
			}
			if g.srv.Open() != 1 {
				t.Errorf("Open() = %d, want 1", g.srv.Open())
			}

			c.close()
			g.settled(t)
			g.nodeMu.Lock()
			defer g.nodeMu.Unlock()
			if len(g.nodeIn) != 1 {
				t.Fatalf("node took %d connections, want 1", len(g.nodeIn))
			}
		})
	}
}

func TestChannelToTheNodeByNameOrAddress(t *testing.T) {
	g := newGW(t, Config{})
	host, _, _ := net.SplitHostPort(g.node)
	for _, target := range []string{"POOL", "n1", host, "pool:3389"} {
		c := dialWS(t, g)
		tunnelUp(t, c, g.token(t, "bob"))
		channelUp(t, c, target)
		echo(t, c, []byte("x"))
		c.close()
		g.settled(t)
	}
}

func TestForgedTokenRefused(t *testing.T) {
	other := &Signer{Key: bytes.Repeat([]byte("o"), MinKeyLen)}
	forged, _, err := other.Issue("alice", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range transports {
		for name, tok := range map[string]string{"other key": forged, "garbage": "pg1.e30.AAAA", "empty": ""} {
			t.Run(tr.name+"/"+name, func(t *testing.T) {
				g := newGW(t, Config{})
				c := tr.dial(t, g)
				handshake(t, c)
				mustSend(t, c, tunnelCreateReq(tok))
				typ, body := recvPkt(t, c)
				if typ != pktTunnelResponse {
					t.Fatalf("answer type %#x, want a tunnel response", typ)
				}
				if s := status32(t, body, 2); s != eProxyCookieAuthenticationDenied {
					t.Fatalf("tunnel response status %#x, want %#x (E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED)", s, eProxyCookieAuthenticationDenied)
				}
				expectClosed(t, c)
				g.settled(t)
				if n := len(g.nodeIn); n != 0 {
					t.Fatalf("the node was dialled %d times", n)
				}
			})
		}
	}
}

func TestExpiredTokenRefused(t *testing.T) {
	g := newGW(t, Config{})
	past := &Signer{Key: testKey, Now: func() time.Time { return time.Now().Add(-time.Hour) }}
	tok, _, err := past.Issue("alice", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, g)
	handshake(t, c)
	mustSend(t, c, tunnelCreateReq(tok))
	_, body := recvPkt(t, c)
	if s := status32(t, body, 2); s != eProxyCookieAuthenticationDenied {
		t.Fatalf("tunnel response status %#x, want %#x", s, eProxyCookieAuthenticationDenied)
	}
	expectClosed(t, c)
	g.settled(t)
}

func TestChannelToAnotherHostRefused(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			g := newGW(t, Config{})
			c := tr.dial(t, g)
			tunnelUp(t, c, g.token(t, "alice"))
			mustSend(t, c, channelCreateReq("intranet.example", 3389))
			typ, body := recvPkt(t, c)
			if typ != pktChannelResponse {
				t.Fatalf("answer type %#x, want a channel response", typ)
			}
			if s := status32(t, body, 0); s != eProxyRAPAccessDenied {
				t.Fatalf("channel response status %#x, want %#x (E_PROXY_RAP_ACCESSDENIED)", s, eProxyRAPAccessDenied)
			}
			expectClosed(t, c)
			g.settled(t)
			if n := len(g.nodeIn); n != 0 {
				t.Fatalf("the node was dialled %d times", n)
			}
		})
	}
}

func TestHandshakeWithoutPAARefused(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			g := newGW(t, Config{})
			c := tr.dial(t, g)
			mustSend(t, c, handshakeReq(0))
			typ, body := recvPkt(t, c)
			if typ != pktHandshakeResponse {
				t.Fatalf("answer type %#x, want a handshake response", typ)
			}
			if s := status32(t, body, 0); s&0x80000000 == 0 {
				t.Fatalf("handshake response status %#x: FreeRDP takes it as success (bit 31 clear)", s)
			}
			expectClosed(t, c)
			g.settled(t)
		})
	}
}

func TestPendingCapPerAddress(t *testing.T) {
	g := newGW(t, Config{MaxPendingPerAddress: 2})
	a, b := dialWS(t, g), dialWS(t, g)
	if n := g.srv.Pending(); n != 2 {
		t.Fatalf("Pending() = %d with two upgraded clients, want 2", n)
	}

	// A third WebSocket and a third legacy OUT channel are refused.
	_, status, _ := tryWS(t, g)
	if !strings.HasPrefix(status, "HTTP/1.1 503 ") {
		t.Fatalf("third pending connection answered %q, want 503", status)
	}
	out := dialTCP(t, g.addr())
	_, _ = io.WriteString(out, "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\n"+commonHeaders+
		"Connection: Keep-Alive\r\nRDG-Connection-Id: "+connectionID()+"\r\nRDG-Auth-Scheme: PAA\r\nContent-Length: 0\r\n\r\n")
	if status, _ := readHead(t, bufio.NewReader(out)); !strings.HasPrefix(status, "HTTP/1.1 503 ") {
		t.Fatalf("third pending legacy OUT answered %q, want 503", status)
	}

	// Past its token, a tunnel no longer counts: a new one is taken.
	tunnelUp(t, a, g.token(t, "alice"))
	if n := g.srv.Pending(); n != 1 {
		t.Fatalf("Pending() = %d once one client sent its token, want 1", n)
	}
	c := dialWS(t, g)

	a.close()
	b.close()
	c.close()
	g.settled(t)
	d := dialWS(t, g)
	d.close()
	g.settled(t)
}

func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	t.Run("websocket silent", func(t *testing.T) {
		g := newGW(t, Config{HandshakeTimeout: timeout})
		c := dialWS(t, g)
		expectClosed(t, c)
		g.settled(t)
	})
	t.Run("websocket stops after its token", func(t *testing.T) {
		g := newGW(t, Config{HandshakeTimeout: timeout})
		c := dialWS(t, g)
		tunnelUp(t, c, g.token(t, "alice"))
		expectClosed(t, c)
		g.settled(t)
	})
	t.Run("legacy OUT without IN", func(t *testing.T) {
		g := newGW(t, Config{HandshakeTimeout: timeout})
		_, r := dialLegacyOut(t, g, connectionID())
		if n := g.srv.Pending(); n != 1 {
			t.Fatalf("Pending() = %d, want 1", n)
		}
		if _, err := r.ReadByte(); err == nil || isTimeout(err) {
			t.Fatalf("OUT channel without IN not closed: %v", err)
		}
		g.settled(t)
	})
	t.Run("legacy silent", func(t *testing.T) {
		g := newGW(t, Config{HandshakeTimeout: timeout})
		c := dialLegacy(t, g)
		expectClosed(t, c)
		g.settled(t)
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHTTPRefusals(t *testing.T) {
	g := newGW(t, Config{})
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"IN without OUT", "RDG_IN_DATA /remoteDesktopGateway/ HTTP/1.1\r\nHost: gw\r\nRDG-Connection-Id: {00000000-0000-0000-0000-000000000000}\r\nContent-Length: 0\r\n\r\n", 400},
		{"IN without id", "RDG_IN_DATA /remoteDesktopGateway/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n", 400},
		{"OUT without id", "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n", 400},
		{"GET", "GET /remoteDesktopGateway/ HTTP/1.1\r\nHost: gw\r\n\r\n", 405},
		{"POST", "POST /remoteDesktopGateway/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTCP(t, g.addr())
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("answered %s, want %d", resp.Status, tc.want)
			}
			if tc.want == 405 && !strings.Contains(resp.Header.Get("Allow"), "RDG_OUT_DATA") {
				t.Errorf("405 without Allow naming RDG_OUT_DATA: %v", resp.Header)
			}
		})
	}
	g.settled(t)
}

func TestOversizePacketClosesTunnel(t *testing.T) {
	over := func(n uint32) []byte {
		h := make([]byte, 8, 64)
		binary.LittleEndian.PutUint16(h, pktData)
		binary.LittleEndian.PutUint32(h[4:], n)
		return append(h, make([]byte, 32)...)
	}
	for _, tr := range transports {
		t.Run(tr.name+"/before the token", func(t *testing.T) {
			g := newGW(t, Config{})
			c := tr.dial(t, g)
			h := over(maxPreAuthPacket + 1)
			binary.LittleEndian.PutUint16(h, pktHandshakeRequest)
			mustSend(t, c, h)
			expectClosed(t, c)
			g.settled(t)
		})
		t.Run(tr.name+"/relaying", func(t *testing.T) {
			g := newGW(t, Config{})
			c := tr.dial(t, g)
			tunnelUp(t, c, g.token(t, "alice"))
			channelUp(t, c, "pool")
			echo(t, c, []byte("hi"))
			_ = c.send(over(maxPacket + 1))
			// What the gateway sends before it closes is keepalives or a
			// close channel; then the connection ends.
			for {
				typ, _, err := readPkt(c.stream())
				if err != nil {
					if isTimeout(err) {
						t.Fatalf("tunnel left open: %v", err)
					}
					break
				}
				if typ == pktData {
					t.Fatalf("gateway relayed data after an oversize packet")
				}
			}
			g.settled(t)
		})
	}
}

func TestCloseEndsTunnels(t *testing.T) {
	g := newGW(t, Config{})
	var cs []client
	for _, tr := range transports {
		c := tr.dial(t, g)
		tunnelUp(t, c, g.token(t, "alice"))
		channelUp(t, c, "pool")
		echo(t, c, []byte("ping"))
		cs = append(cs, c)
	}
	if n := len(g.rdpSessions()); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	done := make(chan struct{})
	go func() { _ = g.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	if n := len(g.rdpSessions()); n != 0 {
		t.Fatalf("%d sessions left after Close, want 0", n)
	}
	if n := g.srv.Open(); n != 0 {
		t.Fatalf("Open() = %d after Close", n)
	}
	for _, c := range cs {
		for {
			typ, _, err := readPkt(c.stream())
			if err != nil {
				if isTimeout(err) {
					t.Fatalf("client connection left open after Close: %v", err)
				}
				break
			}
			if typ == pktData {
				t.Fatal("data after Close")
			}
		}
	}
	// A new client after Close gets no tunnel.
	c, status, _ := tryWS(t, g)
	if strings.HasPrefix(status, "HTTP/1.1 101") {
		expectClosed(t, c)
	}
	g.settled(t)
}

func TestNodeCloseEndsChannel(t *testing.T) {
	g := newGW(t, Config{})
	c := dialWS(t, g)
	tunnelUp(t, c, g.token(t, "alice"))
	channelUp(t, c, "pool")
	echo(t, c, []byte("a"))
	g.nodeMu.Lock()
	nc := g.nodeIn[0]
	g.nodeMu.Unlock()
	nc.Close()
	sawClose := false
	for {
		typ, body, err := readPkt(c.stream())
		if err != nil {
			if isTimeout(err) {
				t.Fatal("client left open after the node closed")
			}
			break
		}
		if typ == pktCloseChannel {
			sawClose = true
			if len(body) != 4 {
				t.Errorf("close channel body % x, want a u32 status", body)
			}
		}
	}
	if !sawClose {
		t.Error("the node's close reached the client without a CLOSE_CHANNEL")
	}
	g.settled(t)
}

// FreeRDP opens the IN channel as soon as it has read the OUT channel's
// seed: the OUT channel must be waiting for it by then. The gateway's
// connection is held just after it wrote the seed, until the IN channel
// has its answer (or a bound passes), so the test does not depend on luck.
func TestLegacyINRightAfterSeed(t *testing.T) {
	release := make(chan struct{})
	g := newGWOn(t, Config{HandshakeTimeout: time.Second}, func(ln net.Listener) net.Listener {
		return &seedHoldListener{Listener: ln, release: release}
	}, Options{})
	id := connectionID()
	out, _ := dialLegacyOut(t, g, id)
	defer out.Close()
	in := dialTCP(t, g.addr())
	_, _ = io.WriteString(in, "RDG_IN_DATA /remoteDesktopGateway/ HTTP/1.1\r\n"+commonHeaders+
		"Connection: Keep-Alive\r\nRDG-Connection-Id: "+id+"\r\nRDG-Auth-Scheme: PAA\r\nContent-Length: 0\r\n\r\n")
	status, _ := readHead(t, bufio.NewReader(in))
	close(release)
	if status != "HTTP/1.1 200 OK" {
		t.Errorf("IN channel sent right after the OUT channel's seed answered %q, want 200: "+
			"serveLegacyOut writes the seed before it registers the OUT channel", status)
	}
	in.Close()
	out.Close()
	g.settled(t)
}

// seedHoldListener's connections hold a 10-byte write (the seed) after it
// went out, until release is closed or a second passes.
type seedHoldListener struct {
	net.Listener
	release chan struct{}
}

func (l *seedHoldListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &seedHoldConn{Conn: c, release: l.release}, nil
}

type seedHoldConn struct {
	net.Conn
	release chan struct{}
}

func (c *seedHoldConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if len(p) == seedLen {
		select {
		case <-c.release:
		case <-time.After(time.Second):
		}
	}
	return n, err
}

// The handshake timeout may strike while the gateway dials the node: the
// client is dropped, and the node connection, made after, is closed and
// its session not left counted.
func TestHandshakeTimeoutWhileDialling(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			dialled := make(chan struct{})
			var once sync.Once
			g := newGWOn(t, Config{HandshakeTimeout: 300 * time.Millisecond}, nil, Options{
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					once.Do(func() { close(dialled) })
					// A slow node: it answers after the handshake timeout.
					select {
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-time.After(time.Second):
					}
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				},
			})
			c := tr.dial(t, g)
			tunnelUp(t, c, g.token(t, "alice"))
			mustSend(t, c, channelCreateReq("pool", 3389))
			<-dialled
			for {
				typ, body, err := readPkt(c.stream())
				if err != nil {
					if isTimeout(err) {
						t.Fatal("client left open past the handshake timeout")
					}
					break
				}
				if typ == pktChannelResponse && len(body) >= 4 && binary.LittleEndian.Uint32(body) == 0 {
					t.Fatal("channel opened past the handshake timeout")
				}
			}
			g.settled(t)
			testutil.Eventually(t, wait, "the node connection closed", func() bool {
				g.nodeMu.Lock()
				defer g.nodeMu.Unlock()
				for _, nc := range g.nodeIn {
					if _, err := nc.Write([]byte{0}); err == nil {
						return false
					}
				}
				return true
			})
		})
	}
}

// An idle tunnel gets keepalives, then is closed at idle_timeout and its
// session released.
func TestIdleTimeout(t *testing.T) {
	g := newGW(t, Config{IdleTimeout: 400 * time.Millisecond})
	c := dialWS(t, g)
	tunnelUp(t, c, g.token(t, "alice"))
	channelUp(t, c, "pool")
	echo(t, c, []byte("x"))
	keepalives := 0
	for {
		typ, _, err := readPkt(c.stream())
		if err != nil {
			if isTimeout(err) {
				t.Fatal("idle tunnel left open")
			}
			break
		}
		if typ == pktKeepalive {
			keepalives++
			// The client's echo is not activity.
			mustSend(t, c, pkt(pktKeepalive, nil))
		}
	}
	if keepalives == 0 {
		t.Error("idle tunnel closed without a keepalive first")
	}
	g.settled(t)
}

// A token naming its node opens that node (by its name as target); one
// naming a node the pool does not have gets E_PROXY_TS_CONNECTFAILED.
func TestTokenForNode(t *testing.T) {
	g := newGW(t, Config{})
	tok, _, err := g.signer.Issue("alice", "n1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, g)
	tunnelUp(t, c, tok)
	channelUp(t, c, "n1")
	echo(t, c, []byte("x"))
	if s := g.rdpSessions(); len(s) != 1 || s[0].Node != "n1" || s[0].User != "alice" {
		t.Fatalf("sessions %+v", s)
	}
	c.close()
	g.settled(t)

	tok, _, err = g.signer.Issue("alice", "n9", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c = dialWS(t, g)
	tunnelUp(t, c, tok)
	mustSend(t, c, channelCreateReq("n9", 3389))
	typ, body := recvPkt(t, c)
	if s := status32(t, body, 0); typ != pktChannelResponse || s&0x80000000 == 0 {
		t.Fatalf("channel to a node the pool lacks answered type %#x status %#x, want a failure", typ, s)
	}
	expectClosed(t, c)
	g.settled(t)
}
