package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
)

// localRequest is httptest.NewRequest addressed as the CLI addresses the
// API (Host 127.0.0.1:9090), not to example.com, whose Host the API
// refuses (guard.go).
func localRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.Host = "127.0.0.1:9090"
	return r
}
