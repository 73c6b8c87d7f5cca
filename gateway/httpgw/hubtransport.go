package httpgw

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// hubIdleTimeout is how long an idle connection to a hub is kept.
const hubIdleTimeout = 90 * time.Second

// maxHubHeader bounds the bytes a hub may send before its answer's body
// (every 1xx head and the final head together), and max1xx the
// informational answers it may send before the final one.
const (
	maxHubHeader = 1 << 20
	max1xx       = 5
)

var (
	errHubHeaderTooLarge = fmt.Errorf("hub's response header is larger than %d bytes", maxHubHeader)
	errHubToo1xx         = fmt.Errorf("hub sent more than %d informational (1xx) answers", max1xx)
)

// hubTransport carries requests to the hubs. Ordinary reads (GET and HEAD
// without a body or an upgrade: static files, API polls, most of
// Jupyter's traffic) are written and answered on the caller's goroutine
// over a pool of idle connections per hub. net/http's Transport hands
// each request to a connection's writer goroutine and its response back
// from a reader goroutine; doing without both handoffs is the larger part
// of what the gateway spends per request beyond the system calls.
// Everything else (request bodies, WebSocket upgrades, other methods)
// goes through the standard transport, whose handling of bodies and
// retries the gateway does not repeat.
//
// Without a reader goroutine, a connection the hub closed while idle is
// found out only when reused: a read that fails before any byte of the
// answer arrived is retried once on a new connection (only GET and HEAD
// come here, so the retry is safe).
type hubTransport struct {
	std     *http.Transport
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle int              // per hub
	fps     *hubFingerprints // nil unless hubs are checked by fingerprint

	mu    sync.Mutex
	idle  map[string][]*hubConn // by host:port; the most recently used last
	swept time.Time             // when put last closed expired connections everywhere
}

// hubConn is one connection to a hub.
type hubConn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	nread  int64     // bytes read so far, to tell a dead idle connection
	limit  int64     // while reading a head: nread may not pass it; 0 = no limit
	idleAt time.Time // when it went back to the pool
}

func (c *hubConn) Read(p []byte) (int, error) {
	if c.limit > 0 {
		left := c.limit - c.nread
		if left <= 0 {
			return 0, errHubHeaderTooLarge
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := c.nc.Read(p)
	c.nread += int64(n)
	return n, err
}

// lean reports whether r goes over the transport's own pool.
func lean(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		(r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 &&
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		len(r.Header["Expect"]) == 0 && (r.URL.Scheme == "http" || r.URL.Scheme == "https")
}

// RoundTrip implements http.RoundTripper.
func (t *hubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !lean(r) {
		return t.std.RoundTrip(r)
	}
	addr := r.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if r.URL.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), port)
	}
	for retried := false; ; retried = true {
		c, reused := t.get(addr)
		if c == nil {
			nc, err := t.dial(r.Context(), "tcp", addr)
			if err != nil {
				return nil, err
			}
			c = &hubConn{nc: nc}
			c.br = bufio.NewReaderSize(c, 4<<10)
			c.bw = bufio.NewWriterSize(nc, 4<<10)
		}
		resp, silent, err := t.exchange(addr, c, r)
		if err == nil {
			return resp, nil
		}
		if !reused || !silent || retried || r.Context().Err() != nil {
			return nil, err
		}
	}
}

// exchange writes r on c and reads the response head. The body, when
// read to its end, puts c back in the pool. silent reports, with an
// error, that the hub sent nothing back.
func (t *hubTransport) exchange(addr string, c *hubConn, r *http.Request) (resp *http.Response, silent bool, err error) {
	ctx := r.Context()
	// A cancelled request ends at once: the deadline wakes any read or
	// write on c, and c is not reused.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	before := c.nread
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		c.nc.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, c.nread == before, err
	}
	if err := r.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	c.limit = before + maxHubHeader
	for n1xx := 0; ; n1xx++ {
		if n1xx > max1xx {
			return fail(errHubToo1xx)
		}
		resp, err = http.ReadResponse(c.br, r)
		if err != nil {
			if c.nread == before {
				err = fmt.Errorf("%w (hub sent nothing)", err)
			}
			return fail(err)
		}
		// 1xx informational answers (100, 103) are skipped; 101 was not
		// asked for.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	c.limit = 0
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("hub switched protocols unasked"))
	}
	keep := !resp.Close && !r.Close
	if resp.Body == http.NoBody {
		t.done(addr, c, stop, keep)
		return resp, false, nil
	}
	resp.Body = &hubBody{body: resp.Body, t: t, addr: addr, c: c, stop: stop, keep: keep}
	return resp, false, nil
}

// done ends an exchange: c goes back to the pool when keep holds and the
// request was not cancelled, and is closed otherwise.
func (t *hubTransport) done(addr string, c *hubConn, stop func() bool, keep bool) {
	if !stop() || !keep || c.br.Buffered() > 0 {
		c.nc.Close()
		return
	}
	t.put(addr, c)
}

// hubBody is a response body on a pooled connection.
type hubBody struct {
	body io.ReadCloser
	t    *hubTransport
	addr string
	c    *hubConn
	stop func() bool
	keep bool
	over bool
}

func (b *hubBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.over = true
		b.t.done(b.addr, b.c, b.stop, b.keep)
	}
	return n, err
}

// Close before the end closes the connection: draining an unread body
// (a large download the browser gave up on) would cost more than a new
// connection.
func (b *hubBody) Close() error {
	if b.over {
		return nil
	}
	b.over = true
	b.stop()
	b.c.nc.Close()
	_ = b.body.Close()
	return nil
}

// get takes the most recently used idle connection to addr, closing those
// idle too long.
func (t *hubTransport) get(addr string) (c *hubConn, reused bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.idle[addr]
	for len(list) > 0 {
		c = list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		// A hub that sent bytes on an idle connection (a late answer, an
		// error page, a close) must not have them taken for the next
		// request's answer.
		if time.Since(c.idleAt) < hubIdleTimeout && !c.dirty() {
			t.idle[addr] = list
			return c, true
		}
		c.nc.Close()
	}
	t.idle[addr] = list
	return nil, false
}

// put returns c to the pool, closing the oldest idle connection when the
// pool is full.
func (t *hubTransport) put(addr string, c *hubConn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.maxIdle <= 0 {
		c.nc.Close()
		return
	}
	if c.idleAt.Sub(t.swept) > hubIdleTimeout {
		t.sweepLocked(c.idleAt)
	}
	list := t.idle[addr]
	if len(list) >= t.maxIdle {
		list[0].nc.Close()
		list = append(list[:0], list[1:]...)
	}
	t.idle[addr] = append(list, c)
}

// sweepLocked closes the connections idle too long, of every hub (those
// of a node that left the pool are never asked for again).
func (t *hubTransport) sweepLocked(now time.Time) {
	t.swept = now
	for addr, list := range t.idle {
		k := 0
		for k < len(list) && now.Sub(list[k].idleAt) >= hubIdleTimeout {
			list[k].nc.Close()
			k++
		}
		if k == len(list) {
			delete(t.idle, addr)
			continue
		}
		t.idle[addr] = append(list[:0], list[k:]...)
	}
}

// CloseIdleConnections closes every idle connection, of both transports.
func (t *hubTransport) CloseIdleConnections() {
	t.mu.Lock()
	for addr, list := range t.idle {
		for _, c := range list {
			c.nc.Close()
		}
		delete(t.idle, addr)
	}
	t.mu.Unlock()
	t.std.CloseIdleConnections()
}
