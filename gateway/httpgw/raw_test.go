package httpgw

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"testing"
)

// rawRequest sends line and a Host header as they are, on a new
// connection to base.
func rawRequest(t *testing.T, base, line string) (net.Conn, *bufio.Reader) {
	t.Helper()
	u, _ := url.Parse(base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "%s\r\nHost: %s\r\nConnection: close\r\n\r\n", line, u.Host)
	return c, bufio.NewReader(c)
}
