package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/poolgate/poolgate/balancer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testPool(t *testing.T) *balancer.Balancer {
	t.Helper()
	b := balancer.New(balancer.Config{}, balancer.Options{})
	b.SetNodes([]balancer.Node{{Name: "node-1", SSH: "10.0.0.4:22"}, {Name: "node-2", SSH: "10.0.0.5:22"}})
	b.SetHealth("node-1", balancer.SSH, true, "ok")
	b.SetHealth("node-2", balancer.SSH, true, "ok")
	for _, u := range []string{"alice", "alice", "bob"} {
		if _, err := b.Acquire(u, balancer.SSH, "192.0.2.9:5000"); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func do(t *testing.T, h http.Handler, method, path, token string) (int, map[string]any) {
	t.Helper()
	req := localRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s %s: body is not JSON: %q", method, path, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	return rec.Code, body
}

func TestAPIOpenOnLoopback(t *testing.T) {
	b := testPool(t)
	s, err := New(Config{}, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()

	code, body := do(t, h, "GET", "/api/nodes", "")
	if code != 200 {
		t.Fatalf("GET /api/nodes: %d %v", code, body)
	}
	nodes := body["nodes"].([]any)
	total, users := 0.0, map[string]bool{}
	for _, n := range nodes {
		n := n.(map[string]any)
		total += n["sessions"].(map[string]any)["ssh"].(float64)
		for _, u := range n["users"].([]any) {
			users[u.(string)] = true
		}
		if n["state"] != "up" {
			t.Fatalf("node state %v", n["state"])
		}
	}
	if len(nodes) != 2 || total != 3 || !users["alice"] || !users["bob"] {
		t.Fatalf("nodes: %v", nodes)
	}

	code, body = do(t, h, "GET", "/api/sessions?user=alice", "")
	if code != 200 || len(body["sessions"].([]any)) != 2 {
		t.Fatalf("sessions of alice: %d %v", code, body)
	}
	first := body["sessions"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "user", "node", "protocol", "client", "started"} {
		if _, ok := first[k]; !ok {
			t.Fatalf("session lacks %q: %v", k, first)
		}
	}
	aliceNode := first["node"].(string)
	code, body = do(t, h, "GET", "/api/sessions?node="+aliceNode, "")
	if code != 200 || len(body["sessions"].([]any)) < 2 {
		t.Fatalf("sessions on %s: %v", aliceNode, body)
	}

	code, body = do(t, h, "POST", "/api/nodes/node-1/drain", "")
	if code != 200 || body["state"] != "draining" {
		t.Fatalf("drain: %d %v", code, body)
	}
	code, body = do(t, h, "POST", "/api/nodes/node-1/undrain", "")
	if code != 200 || body["state"] != "up" {
		t.Fatalf("undrain: %d %v", code, body)
	}
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/api/nodes/nope/drain", 404},
		{"POST", "/api/nodes/node-1/reboot", 404},
		{"GET", "/api/nodes/node-1/drain", 405},
		{"POST", "/api/nodes", 405},
		{"DELETE", "/api/sessions", 405},
		{"GET", "/api/nothing", 404},
		{"GET", "/healthz", 200},
	} {
		if code, body := do(t, h, tt.method, tt.path, ""); code != tt.want || (code >= 400 && body["error"] == "") {
			t.Errorf("%s %s: %d %v, want %d with an error message", tt.method, tt.path, code, body, tt.want)
		}
	}
}

func writeTok(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAPITokens(t *testing.T) {
	const write, read = "write-token-0123456789", "read-token-0123456789"
	s, err := New(Config{Listen: "0.0.0.0:9090", TokenFile: writeTok(t, write), ReadTokenFile: writeTok(t, read)}, testPool(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	for _, path := range []string{"/api/nodes", "/api/sessions", "/healthz", "/api/access", "/metrics", "/api/nothing"} {
		for _, tok := range []string{"", "wrong-token-0123456789", write[:10]} {
			if code, _ := do(t, h, "GET", path, tok); code != 401 {
				t.Errorf("GET %s with token %q: %d, want 401", path, tok, code)
			}
		}
	}
	if code, _ := do(t, h, "POST", "/api/nodes/node-1/drain", ""); code != 401 {
		t.Errorf("drain without token: %d", code)
	}
	if code, _ := do(t, h, "GET", "/api/nodes", read); code != 200 {
		t.Errorf("read token reading: %d", code)
	}
	if code, body := do(t, h, "POST", "/api/nodes/node-1/drain", read); code != 403 || !strings.Contains(body["error"].(string), "may only read") {
		t.Errorf("read token draining: %d %v", code, body)
	}
	if code, _ := do(t, h, "POST", "/api/nodes/node-1/drain", write); code != 200 {
		t.Errorf("write token draining: %d", code)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, ""},
		{Config{Listen: "127.0.0.1:9090"}, ""},
		{Config{Listen: "[::1]:9090"}, ""},
		{Config{Listen: "0.0.0.0:9090"}, "token_file: required"},
		{Config{Listen: "10.0.0.4:9090", TokenFile: "/etc/t"}, ""},
		{Config{Listen: "127.0.0.1:9090", ReadTokenFile: "/etc/r"}, "read_token_file:"},
		{Config{Listen: "nowhere"}, "listen:"},
	} {
		err := tt.cfg.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
	if _, err := New(Config{TokenFile: writeTok(t, "short")}, testPool(t), Options{}); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("short token: %v", err)
	}
}

func TestAPINodesShowHubHealth(t *testing.T) {
	b := balancer.New(balancer.Config{}, balancer.Options{})
	b.SetNodes([]balancer.Node{
		{Name: "node-1", SSH: "10.0.0.4:22", HTTP: "10.0.0.4:8000"},
		{Name: "node-2", SSH: "10.0.0.5:22", HTTP: "10.0.0.5:8000"},
		{Name: "node-3", SSH: "10.0.0.6:22", HTTP: "10.0.0.6:8000"},
		{Name: "node-4", SSH: "10.0.0.7:22"},
	})
	b.SetHealth("node-1", balancer.HTTP, true, "ok")
	b.SetHealth("node-2", balancer.HTTP, false, "GET /hub/health: 503 Service Unavailable")
	s, err := New(Config{}, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, body := do(t, s.Handler(), "GET", "/api/nodes", "")
	want := map[string][2]any{
		"node-1": {"up", "ok"},
		"node-2": {"down", "GET /hub/health: 503 Service Unavailable"},
		"node-3": {"unchecked", "not checked yet"},
		"node-4": {nil, nil},
	}
	for _, n := range body["nodes"].([]any) {
		n := n.(map[string]any)
		if w := want[n["name"].(string)]; n["http_state"] != w[0] || n["http_health"] != w[1] {
			t.Errorf("%s: http_state %v http_health %v, want %v", n["name"], n["http_state"], n["http_health"], w)
		}
	}
}
