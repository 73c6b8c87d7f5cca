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

// Item 4 of issue 12: a new TLS connection to a hub under certificate
// pinning finds the hub's node from the gateway's own node set, never by
// asking the shared state for the whole pool.
func TestHubDialAsksNoSharedState(t *testing.T) {
	var views atomic.Int32
	e := newEnvWith(t, Config{}, true, func(b *balancer.Balancer) Balancer {
		return sharedViewBalancer{Balancer: b, views: &views}
	})
	for _, u := range []string{"alice", "bob", "carol"} {
		if code, body, _ := e.get(e.browser(), "/user/"+u+"/tree"); code != 200 {
			t.Fatalf("%s through pinned TLS hubs: %d %q", u, code, body)
		}
	}
	if n := views.Load(); n != 0 {
		t.Fatalf("dialing the hubs asked the shared state for the node set %d times, want 0", n)
	}
}

func TestUpstreamTLSPinning(t *testing.T) {
	e := newEnv(t, Config{}, true)
	if code, body, _ := e.get(e.browser(), "/user/alice/tree"); code != 200 || !strings.HasPrefix(body, "node-") {
		t.Fatalf("through pinned TLS hubs: %d %q", code, body)
	}
	data, err := os.ReadFile(filepath.Join(e.gw.stateDirForTest(), "http_hub_pins.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pins map[string]string
	if err := json.Unmarshal(data, &pins); err != nil || len(pins) != 1 {
		t.Fatalf("pins file %s: %v", data, err)
	}
	// A different certificate for a pinned node is refused.
	p := &hubPins{path: filepath.Join(t.TempDir(), "p.json"), log: zap.NewNop(), pins: map[string]string{}, config: map[string]bool{}}
	if err := p.check("n", []byte("cert one")); err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert one")); err != nil {
		t.Fatal(err)
	}
	if err := p.check("n", []byte("cert two")); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("changed certificate: %v", err)
	}

	// A configured pin that does not match: the user gets the 503 page.
	pinned := map[string]string{}
	for _, h := range []string{"node-1", "node-2", "node-3"} {
		pinned[h] = "sha256:" + strings.Repeat("00", 32)
	}
	e2 := newEnv(t, Config{UpstreamPins: pinned}, true)
	if code, body, _ := e2.get(e2.browser(), "/user/alice/tree"); code != 503 || !strings.Contains(body, "not answering") {
		t.Fatalf("wrong pin: %d %q", code, body)
	}
	if e2.logs.FilterMessage("hub did not answer").Len() == 0 {
		t.Fatal("the pin mismatch was not logged")
	}
}
