package httpgw

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/poolgate/poolgate/balancer"
)

// sharedViewBalancer is a balancer sharing its state: its Nodes is the
// whole pool's view, a round trip to the shared state (Redis) under the
// view lock that may take seconds when Redis is slow. It counts the
// calls.
type sharedViewBalancer struct {
	*balancer.Balancer
	views *atomic.Int32
}

func (b sharedViewBalancer) Nodes() []balancer.NodeStatus {
	b.views.Add(1)
	return b.Balancer.Nodes()
}

// Item 4 of issue 12: a new TLS connection to a hub checked by its
// certificate fingerprint finds the hub's node from the gateway's own node
// set, never by asking the shared state for the whole pool.
func TestHubDialAsksNoSharedState(t *testing.T) {
	var views atomic.Int32
	e := newEnvWith(t, Config{}, true, func(b *balancer.Balancer) Balancer {
		return sharedViewBalancer{Balancer: b, views: &views}
	})
	for _, u := range []string{"alice", "bob", "carol"} {
		if code, body, _ := e.get(e.browser(), "/user/"+u+"/tree"); code != 200 {
			t.Fatalf("%s through TLS hubs known by fingerprint: %d %q", u, code, body)
		}
	}
	if n := views.Load(); n != 0 {
		t.Fatalf("dialing the hubs asked the shared state for the node set %d times, want 0", n)
	}
}

func TestUpstreamTLSFingerprints(t *testing.T) {
	e := newEnv(t, Config{}, true)
	if code, body, _ := e.get(e.browser(), "/user/alice/tree"); code != 200 || !strings.HasPrefix(body, "node-") {
		t.Fatalf("through TLS hubs known by fingerprint: %d %q", code, body)
	}
	data, err := os.ReadFile(filepath.Join(e.gw.stateDirForTest(), "http_hub_fingerprints.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fps map[string]string
	if err := json.Unmarshal(data, &fps); err != nil || len(fps) != 1 {
		t.Fatalf("fingerprints file %s: %v", data, err)
	}
	// A different certificate for a known node is refused.
	p := &hubFingerprints{path: filepath.Join(t.TempDir(), "p.json"), log: zap.NewNop(), known: map[string]string{}, config: map[string]bool{}}
	if err := p.check("n", []byte("cert one")); err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert one")); err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert two")); !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("changed certificate: %v", err)
	}

	// A configured fingerprint that does not match: the user gets the
	// 503 page. The old name of the key, upstream_pins, still works.
	wrong := map[string]string{}
	for _, h := range []string{"node-1", "node-2", "node-3"} {
		wrong[h] = "sha256:" + strings.Repeat("00", 32)
	}
	for _, cfg := range []Config{{UpstreamFingerprints: wrong}, {UpstreamPins: wrong}} {
		e2 := newEnv(t, cfg, true)
		if code, body, _ := e2.get(e2.browser(), "/user/alice/tree"); code != 503 || !strings.Contains(body, "not answering") {
			t.Fatalf("wrong fingerprint: %d %q", code, body)
		}
		if e2.logs.FilterMessage("hub did not answer").Len() == 0 {
			t.Fatal("the fingerprint mismatch was not logged")
		}
		if old := e2.logs.FilterMessageSnippet("upstream_pins is the old name").Len(); (cfg.UpstreamPins != nil) != (old == 1) {
			t.Fatalf("%d warnings about the old key name", old)
		}
	}
}

// A state_dir written before the rename holds http_hub_pins.json: its
// fingerprints still count, and move to http_hub_fingerprints.json (the
// old file stays, for a downgrade).
func TestHubFingerprintsOldFile(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "http_hub_pins.json")
	known := Fingerprint([]byte("cert one"))
	if err := os.WriteFile(old, []byte(`{"n": "`+known+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := loadHubFingerprints(dir, nil, "upstream_fingerprints", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert two")); !errors.Is(err, ErrFingerprintMismatch) || !strings.Contains(err.Error(), "http_hub_fingerprints.json") {
		t.Fatalf("a fingerprint of the old file: %v", err)
	}
	if err := p.check("m", []byte("cert three")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "http_hub_fingerprints.json"))
	var fps map[string]string
	if err != nil || json.Unmarshal(data, &fps) != nil || fps["n"] != known || fps["m"] != Fingerprint([]byte("cert three")) {
		t.Fatalf("new file: %s, %v", data, err)
	}
	if data, _ := os.ReadFile(old); !strings.Contains(string(data), known) || strings.Contains(string(data), `"m"`) {
		t.Fatalf("the old file was changed: %s", data)
	}
	// Once the new file exists the old one is not read: a node removed
	// from the new file is learned again.
	if err := os.WriteFile(filepath.Join(dir, "http_hub_fingerprints.json"), []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err = loadHubFingerprints(dir, nil, "upstream_fingerprints", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert two")); err != nil {
		t.Fatalf("the old file was read again: %v", err)
	}
}

// A state_dir the gateway cannot write keeps using the old file.
func TestHubFingerprintsOldFileReadOnly(t *testing.T) {
	known := Fingerprint([]byte("cert one"))
	ro := t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "http_hub_pins.json"), []byte(`{"n": "`+known+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(ro, 0o700)
	if os.WriteFile(filepath.Join(ro, "probe"), nil, 0o600) == nil {
		t.Skip("running as root: directory modes do not stop writes")
	}
	p, err := loadHubFingerprints(ro, nil, "upstream_fingerprints", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert two")); !errors.Is(err, ErrFingerprintMismatch) || !strings.Contains(err.Error(), "http_hub_pins.json") {
		t.Fatalf("read-only state_dir: %v", err)
	}
}

// TestHubFingerprintsReload: after a hub's certificate is replaced on
// purpose, ops delete its node from the learnt file and reload; the new
// certificate is then learnt, while the other hubs are still checked.
func TestHubFingerprintsReload(t *testing.T) {
	dir := t.TempDir()
	fps, err := loadHubFingerprints(dir, nil, "upstream_fingerprints", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := fps.check("node-1", []byte("cert-1")); err != nil {
		t.Fatal(err)
	}
	if err := fps.check("node-2", []byte("cert-2")); err != nil {
		t.Fatal(err)
	}
	if err := fps.check("node-1", []byte("cert-1-new")); err == nil {
		t.Fatal("a replaced certificate was taken before ops forgot the old one")
	}
	data, err := os.ReadFile(filepath.Join(dir, hubFingerprintsFile))
	if err != nil {
		t.Fatal(err)
	}
	var learnt map[string]string
	if err := json.Unmarshal(data, &learnt); err != nil {
		t.Fatal(err)
	}
	delete(learnt, "node-1")
	data, _ = json.Marshal(learnt)
	if err := os.WriteFile(filepath.Join(dir, hubFingerprintsFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	forgotten, err := fps.reload(nil, "upstream_fingerprints")
	if err != nil || len(forgotten) != 1 || forgotten[0] != "node-1" {
		t.Fatalf("reload: forgotten %q, %v; want node-1", forgotten, err)
	}
	if err := fps.check("node-1", []byte("cert-1-new")); err != nil {
		t.Fatalf("node-1's new certificate after the reload: %v", err)
	}
	if err := fps.check("node-2", []byte("cert-x")); err == nil {
		t.Fatal("node-2 is no longer checked after the reload")
	}
	if err := os.WriteFile(filepath.Join(dir, hubFingerprintsFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fps.reload(nil, "upstream_fingerprints"); err == nil {
		t.Fatal("a file that does not parse was taken")
	}
	if err := fps.check("node-2", []byte("cert-2")); err != nil {
		t.Fatalf("a refused reload dropped node-2's fingerprint: %v", err)
	}
}
