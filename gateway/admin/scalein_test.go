package admin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeScaler struct {
	idle   time.Duration
	keep   int
	dryRun bool
	calls  int
	err    error
}

func (f *fakeScaler) ScaleIn(_ context.Context, idle time.Duration, keep int, dryRun bool) (ScaleInJSON, error) {
	f.calls++
	f.idle, f.keep, f.dryRun = idle, keep, dryRun
	return ScaleInJSON{DryRun: dryRun, Deleted: []ScaleInNodeJSON{{Node: "node-2"}}}, f.err
}

func TestScaleInAPI(t *testing.T) {
	b := testPool(t)
	s, err := New(Config{}, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if code, body := do(t, h, "POST", "/api/scale-in?idle=1h", ""); code != 501 || !strings.Contains(body["error"].(string), "discovery.azure") {
		t.Fatalf("without a scaler: %d %v", code, body)
	}
	sc := &fakeScaler{}
	if s, err = New(Config{}, b, Options{Scaler: sc}); err != nil {
		t.Fatal(err)
	}
	h = s.Handler()
	for path, want := range map[string]string{
		"/api/scale-in":                       "idle: missing",
		"/api/scale-in?idle=soon":             `idle: "soon" is not a duration`,
		"/api/scale-in?idle=10s":              "idle: must be at least 1m",
		"/api/scale-in?idle=1h&keep=-1":       `keep: "-1" is not a whole number`,
		"/api/scale-in?idle=1h&dry_run=maybe": `dry_run: "maybe" is not true or false`,
	} {
		code, body := do(t, h, "POST", path, "")
		if code != 400 || !strings.Contains(body["error"].(string), want) {
			t.Errorf("POST %s: %d %v, want 400 %q", path, code, body, want)
		}
	}
	if sc.calls != 0 {
		t.Fatal("a malformed request reached the scaler")
	}
	if code, _ := do(t, h, "GET", "/api/scale-in?idle=1h", ""); code != 405 {
		t.Errorf("GET scale-in: %d, want 405", code)
	}
	code, body := do(t, h, "POST", "/api/scale-in?idle=90m&keep=2&dry_run=true", "")
	if code != 200 || body["dry_run"] != true || sc.idle != 90*time.Minute || sc.keep != 2 || !sc.dryRun {
		t.Fatalf("dry run: %d %v, scaler saw %+v", code, body, sc)
	}
	sc.err = errors.New("deleting idle instances: Azure answered 409 Conflict")
	if code, body := do(t, h, "POST", "/api/scale-in?idle=1h", ""); code != 502 || !strings.Contains(body["error"].(string), "409 Conflict") {
		t.Errorf("scaler failing: %d %v", code, body)
	}
}

func TestScaleInNeedsWriteToken(t *testing.T) {
	dir := t.TempDir()
	write, read := filepath.Join(dir, "w"), filepath.Join(dir, "r")
	_ = os.WriteFile(write, []byte("write-token-0123456789\n"), 0o600)
	_ = os.WriteFile(read, []byte("read-token-0123456789\n"), 0o600)
	sc := &fakeScaler{}
	s, err := New(Config{TokenFile: write, ReadTokenFile: read}, testPool(t), Options{Scaler: sc})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if code, _ := do(t, h, "POST", "/api/scale-in?idle=1h", ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _ := do(t, h, "POST", "/api/scale-in?idle=1h", "read-token-0123456789"); code != 403 {
		t.Errorf("read token: %d", code)
	}
	if code, _ := do(t, h, "POST", "/api/scale-in?idle=1h", "write-token-0123456789"); code != 200 || sc.calls != 1 {
		t.Errorf("write token: %d, %d calls", code, sc.calls)
	}
}

func TestNodesReportDiscovery(t *testing.T) {
	b := testPool(t)
	s, _ := New(Config{}, b, Options{})
	h := s.Handler()
	_, body := do(t, h, "GET", "/api/nodes", "")
	if d := body["discovery"].(map[string]any); d["source"] != "static" || d["stale"] != false {
		t.Errorf("static pool: discovery %v", d)
	}
	last := time.Now().Add(-90 * time.Second)
	s, _ = New(Config{}, b, Options{Discovery: func() DiscoveryJSON {
		return DiscoveryJSON{Source: "azure", Stale: true, LastSuccess: &last, Error: "listing the scale set's VMs: Azure answered 503", Live: 2, Protected: []string{"node-1"}}
	}})
	h = s.Handler()
	_, body = do(t, h, "GET", "/api/nodes", "")
	d := body["discovery"].(map[string]any)
	if d["stale"] != true || d["age_seconds"].(float64) < 89 || !strings.Contains(d["error"].(string), "503") {
		t.Errorf("stale discovery: %v", d)
	}
	for _, n := range body["nodes"].([]any) {
		n := n.(map[string]any)
		if got := n["protected"] == true; got != (n["name"] == "node-1") {
			t.Errorf("%s protected = %v", n["name"], n["protected"])
		}
	}
}
