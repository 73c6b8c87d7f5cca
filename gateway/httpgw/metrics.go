package httpgw

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/poolgate/poolgate/gateway/gwmetrics"
)

// countingWriter records the status a request was answered with and,
// while relay is set, counts the bytes of the answer relayed from the
// hub, WebSocket traffic included: Hijack hands the reverse proxy a
// connection that counts both ways.
type countingWriter struct {
	http.ResponseWriter
	m     *gwmetrics.Front
	code  int  // the status written, 0 before any
	relay bool // count what is written as relayed from the hub
}

func (w *countingWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code // 1xx (103 Early Hints) precede the answer
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	if w.relay {
		w.m.Relayed(gwmetrics.ToClient, n)
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer (Flush,
// deadlines).
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands over the connection of an upgraded request (WebSocket),
// counting what crosses it.
func (w *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil || !w.relay {
		return c, brw, err
	}
	return &countingConn{Conn: c, m: w.m}, brw, nil
}

// countingConn counts the bytes of a hijacked connection: read from the
// browser, to the hub; written to the browser, from the hub.
type countingConn struct {
	net.Conn
	m *gwmetrics.Front
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.m.Relayed(gwmetrics.ToNode, n)
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.m.Relayed(gwmetrics.ToClient, n)
	return n, err
}

// countingBody counts a request body as it is read on its way to the hub.
type countingBody struct {
	io.ReadCloser
	m *gwmetrics.Front
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.m.Relayed(gwmetrics.ToNode, n)
	return n, err
}

// answered counts the request in poolgate_http_requests_total: the code
// written, else the one the gateway noted (499: the browser left; 101:
// an upgrade written on the hijacked connection), else 200.
func (s *Server) answered(w *countingWriter, st *reqState) {
	code := w.code
	if code == 0 || st.status == 101 || st.status == 499 {
		code = st.status
	}
	if code == 0 {
		code = http.StatusOK
	}
	s.metrics.Answered(code)
}
