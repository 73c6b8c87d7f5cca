package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/gateway/admin"
)

// apiServer serves the real admin API over a balancer with alice and bob
// connected; token, if set, is required.
func apiServer(t *testing.T, token string) (string, *balancer.Balancer) {
	t.Helper()
	b := balancer.New(balancer.Config{}, balancer.Options{})
	b.SetNodes([]balancer.Node{{Name: "node-1", SSH: "10.0.0.4:22"}, {Name: "node-2", SSH: "10.0.0.5:22"}})
	b.SetHealth("node-1", balancer.SSH, true, "ok")
	b.SetHealth("node-2", balancer.SSH, true, "ok")
	for _, u := range []string{"alice", "bob"} {
		if _, err := b.Acquire(u, balancer.SSH, "192.0.2.1:4000"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := admin.Config{}
	if token != "" {
		cfg.TokenFile = filepath.Join(t.TempDir(), "token")
		os.WriteFile(cfg.TokenFile, []byte(token), 0o600)
	}
	api, err := admin.New(cfg, b, admin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return srv.URL, b
}

func TestCLINodesAndSessions(t *testing.T) {
	url, _ := apiServer(t, "")
	code, out, errs := runCmd("nodes", "--admin", url)
	if code != 0 || !strings.Contains(out, "NODE") || !strings.Contains(out, "node-1") || !strings.Contains(out, "TOTAL (2 nodes)") {
		t.Fatalf("nodes: %d %q %q", code, out, errs)
	}
	for _, u := range []string{"alice", "bob"} {
		if !strings.Contains(out, u) {
			t.Fatalf("nodes table lacks %s:\n%s", u, out)
		}
	}
	code, out, _ = runCmd("nodes", "--json", "--admin", url)
	var js admin.NodesJSON
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || len(js.Nodes) != 2 || js.Nodes[0].Sessions.SSH+js.Nodes[1].Sessions.SSH != 2 {
		t.Fatalf("nodes --json: %d %q", code, out)
	}
	code, out, _ = runCmd("sessions", "--user", "alice", "--admin", url)
	if code != 0 || !strings.Contains(out, "alice") || strings.Contains(out, "bob") || !strings.Contains(out, "1 sessions") {
		t.Fatalf("sessions --user alice: %d %q", code, out)
	}
}

func TestCLIDrain(t *testing.T) {
	url, b := apiServer(t, "")
	t.Setenv("POOLGATE_ADMIN", url)
	code, out, errs := runCmd("drain", "node-2")
	if code != 0 || !strings.Contains(out, "node-2: draining") {
		t.Fatalf("drain: %d %q %q", code, out, errs)
	}
	if b.Nodes()[1].State != balancer.StateDraining {
		t.Fatalf("node-2 is %s after drain", b.Nodes()[1].State)
	}
	code, out, _ = runCmd("undrain", "node-2", "--json")
	if code != 0 || !strings.Contains(out, `"state": "up"`) {
		t.Fatalf("undrain --json: %d %q", code, out)
	}
	code, _, errs = runCmd("drain", "node-9")
	if code != 1 || !strings.Contains(errs, "no node named node-9") {
		t.Fatalf("drain of an unknown node: %d %q", code, errs)
	}
	if code, _, errs = runCmd("drain"); code != 2 || !strings.Contains(errs, "name exactly one node") {
		t.Fatalf("drain without a node: %d %q", code, errs)
	}
}

func TestCLIEmptyDrainedNode(t *testing.T) {
	url, b := apiServer(t, "")
	b.SetNodes([]balancer.Node{{Name: "node-1", SSH: "10.0.0.4:22"}, {Name: "node-2", SSH: "10.0.0.5:22"}, {Name: "node-3", SSH: "10.0.0.6:22"}})
	b.SetHealth("node-3", balancer.SSH, true, "ok")
	if code, _, errs := runCmd("drain", "node-3", "--admin", url); code != 0 {
		t.Fatal(errs)
	}
	_, out, _ := runCmd("nodes", "--admin", url)
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "node-3 ") {
			line = l
		}
	}
	if !strings.Contains(line, "draining (empty: safe to remove)") {
		t.Fatalf("an empty drained node is not shown as safe to remove:\n%s", out)
	}
}

func TestCLIErrors(t *testing.T) {
	url, _ := apiServer(t, "cli-test-token-0123456789")
	code, _, errs := runCmd("nodes", "--admin", url)
	if code != 1 || !strings.Contains(errs, "pass --token or set POOLGATE_TOKEN") {
		t.Fatalf("without token: %d %q", code, errs)
	}
	t.Setenv("POOLGATE_TOKEN", "cli-test-token-0123456789")
	if code, _, errs := runCmd("nodes", "--admin", url); code != 0 {
		t.Fatalf("with POOLGATE_TOKEN: %d %q", code, errs)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	code, _, errs = runCmd("sessions", "--admin", dead)
	if code != 1 || !strings.Contains(errs, "cannot reach the admin API at "+dead) || !strings.Contains(errs, "is poolgate serve running?") {
		t.Fatalf("unreachable API: %d %q", code, errs)
	}
}

func TestCLINodesShowsHubDown(t *testing.T) {
	url, b := apiServer(t, "")
	b.SetNodes([]balancer.Node{{Name: "node-1", SSH: "10.0.0.4:22", HTTP: "10.0.0.4:8000"}, {Name: "node-2", SSH: "10.0.0.5:22", HTTP: "10.0.0.5:8000"}})
	b.SetHealth("node-1", balancer.SSH, true, "ok")
	b.SetHealth("node-1", balancer.HTTP, false, "GET /hub/health: 502 Bad Gateway")
	b.SetHealth("node-2", balancer.SSH, true, "ok")
	b.SetHealth("node-2", balancer.HTTP, true, "ok")
	_, out, _ := runCmd("nodes", "--admin", url)
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if name, _, ok := strings.Cut(l, " "); ok {
			lines[name] = l
		}
	}
	if !strings.Contains(lines["node-1"], "hub down: GET /hub/health: 502 Bad Gateway") || strings.Contains(lines["node-2"], "hub") {
		t.Fatalf("nodes output does not show the hub states:\n%s", out)
	}
}

func TestCLINodesShowLoad(t *testing.T) {
	url, b := apiServer(t, "")
	b.SetLoad("node-1", balancer.Load{CPU: 15.9 / 4, Memory: 0.9, GPU: 1, GPUMemory: 0.25, At: time.Now()})
	code, out, errs := runCmd("nodes", "--admin", url)
	if code != 0 {
		t.Fatalf("nodes: %d %q", code, errs)
	}
	var header, node1, node2 []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "NODE":
			header = f
		case len(f) > 0 && f[0] == "node-1":
			node1 = f
		case len(f) > 0 && f[0] == "node-2":
			node2 = f
		}
	}
	col := func(row []string, name string) string {
		for i, h := range header {
			if h == name && i < len(row) {
				return row[i]
			}
		}
		return ""
	}
	if col(node1, "CPU") != "3.98" || col(node1, "MEM") != "90%" || col(node1, "GPU") != "100%/25%" {
		t.Fatalf("node-1's load columns: %v under %v\n%s", node1, header, out)
	}
	if col(node2, "CPU") != "-" || col(node2, "MEM") != "-" || col(node2, "GPU") != "-" {
		t.Fatalf("node-2 is not measured: %v\n%s", node2, out)
	}
	if strings.Contains(out, "RDP") {
		t.Fatalf("an RDP column for a pool without RDP:\n%s", out)
	}
	if strings.Contains(out, "scrape") {
		t.Fatalf("no scrape failed, yet:\n%s", out)
	}
}

// A node's last scrape error is listed under the table, escaped.
func TestCLINodesShowLoadScrapeError(t *testing.T) {
	url, b := apiServer(t, "")
	b.SetLoad("node-1", balancer.Load{CPU: 0.5, Memory: 0.5, GPU: balancer.Unknown, GPUMemory: balancer.Unknown, At: time.Now()})
	b.SetLoadError("node-2", `node_exporter: GET /metrics: 302 Found: redirect to "http://203.0.113.9/metrics" not followed (scrape the exporter's own address)`)
	code, out, errs := runCmd("nodes", "--admin", url)
	if code != 0 {
		t.Fatalf("nodes: %d %q", code, errs)
	}
	want := "Load scrape failing (the node's figures are its last good ones, if any):\n" +
		`  node-2: node_exporter: GET /metrics: 302 Found: redirect to "http://203.0.113.9/metrics" not followed (scrape the exporter's own address)` + "\n"
	if !strings.HasSuffix(out, want) || strings.Contains(out, "  node-1: ") {
		t.Fatalf("nodes does not list node-2's scrape error (alone) under the table:\n%s", out)
	}

	// A control character the server sends never reaches the terminal.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(admin.NodesJSON{Nodes: []admin.NodeJSON{{Name: "node-1", State: "up", Load: admin.LoadJSON{Error: "boom\x1b]0;pwned\a\ttab"}}}})
	}))
	t.Cleanup(srv.Close)
	code, out, errs = runCmd("nodes", "--admin", srv.URL)
	if code != 0 || strings.ContainsAny(out, "\x1b\a\t") || !strings.Contains(out, `  node-1: "boom\x1b]0;pwned\a\ttab"`) {
		t.Fatalf("nodes: %d %q, output %q: want the error Go-quoted", code, errs, out)
	}
}

func TestCLIPinAndUnpin(t *testing.T) {
	url, b := apiServer(t, "")
	code, out, errs := runCmd("pin", "--admin", url, "carol", "node-2")
	if code != 0 || !strings.Contains(out, "carol is pinned to node-2") {
		t.Fatalf("pin: %d %q %q", code, out, errs)
	}
	for range 3 {
		l, err := b.Acquire("carol", balancer.SSH, "c")
		if err != nil || l.Node().Name != "node-2" {
			t.Fatalf("carol after the pin: %v %v", l, err)
		}
		l.Release()
	}
	code, out, _ = runCmd("sessions", "--admin", url)
	if code != 0 || !strings.Contains(out, "PINNED TO") || !regexpLine(out, `carol\s+node-2\s+ops`) {
		t.Fatalf("sessions lists no ops pin for carol:\n%s", out)
	}
	if code, _, errs = runCmd("pin", "--admin", url, "carol", "node-9"); code != 1 || !strings.Contains(errs, "no node named node-9") {
		t.Fatalf("pin to no such node: %d %q", code, errs)
	}
	_ = b.Drain("node-1")
	if code, _, errs = runCmd("pin", "--admin", url, "carol", "node-1"); code != 1 || !strings.Contains(errs, "draining") {
		t.Fatalf("pin to a draining node: %d %q", code, errs)
	}
	code, out, _ = runCmd("unpin", "--admin", url, "carol")
	if code != 0 || !strings.Contains(out, "placed by load") {
		t.Fatalf("unpin: %d %q", code, out)
	}
	for _, p := range b.Pins() {
		if p.User == "carol" {
			t.Fatalf("carol still pinned after unpin: %+v", p)
		}
	}
}

func regexpLine(text, re string) bool { return regexp.MustCompile(re).MatchString(text) }

// TestCLIUserNames: the CLI names users as the gateway keys them
// (issue 22): "Alice" is alice, and a name no front end accepts is
// refused with the reason.
func TestCLIUserNames(t *testing.T) {
	url, b := apiServer(t, "")
	code, out, errs := runCmd("pin", "--admin", url, "Alice", "node-2")
	if code != 0 || !strings.Contains(out, "alice is pinned to node-2") {
		t.Fatalf("pin Alice: %d %q %q", code, out, errs)
	}
	if n, ok := b.Pinned("alice", balancer.SSH); !ok || n.Name != "node-2" {
		t.Fatalf("alice pinned to %v %v", n, ok)
	}
	code, out, _ = runCmd("sessions", "--user", "ALICE", "--admin", url)
	if code != 0 || !strings.Contains(out, "1 sessions") || !regexpLine(out, `alice\s+node-2\s+ops`) || strings.Contains(out, "bob") {
		t.Fatalf("sessions --user ALICE:\n%s", out)
	}
	code, _, errs = runCmd("sessions", "--user", "a b", "--admin", url)
	if code != 2 || !strings.Contains(errs, `invalid user name: character ' ' at position 2`) {
		t.Fatalf("sessions --user 'a b': %d %q", code, errs)
	}
	code, _, errs = runCmd("pin", "--admin", url, "al\x1b[31mice", "node-2")
	if code != 1 || !strings.Contains(errs, `character '\x1b' at position 3`) || strings.Contains(errs, "\x1b") {
		t.Fatalf("pin with an escape sequence: %d %q", code, errs)
	}
	code, out, _ = runCmd("unpin", "--admin", url, "ALICE")
	if code != 0 || !strings.Contains(out, "alice is not pinned any more") {
		t.Fatalf("unpin ALICE: %d %q", code, out)
	}
}

// After a Redis outage in which two gateways placed a user apart, the
// pins table says where her other session is.
func TestPinsShowSessionsElsewhere(t *testing.T) {
	var out strings.Builder
	printPins(&out, []admin.PinJSON{{User: "frank", Node: "node-1", By: "balancer", Sessions: 2, Elsewhere: []string{"node-3"}}}, "", "")
	if !strings.Contains(out.String(), "frank") || !strings.Contains(out.String(), "sessions also on node-3") {
		t.Fatalf("pins table:\n%s", out.String())
	}
}
