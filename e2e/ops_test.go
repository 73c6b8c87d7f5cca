package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/gateway/admin"
)

// apiNodes reads GET /api/nodes.
func apiNodes(t *testing.T, p *pool) []admin.NodeJSON {
	t.Helper()
	var resp admin.NodesJSON
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/nodes", &resp)
	return resp.Nodes
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(body, out) != nil {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
}

// counts summarises nodes as node → "ssh-count users".
func counts(nodes []admin.NodeJSON) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		users := append([]string(nil), n.Users...)
		sort.Strings(users)
		out[n.Name] = strings.TrimSpace(strings.Repeat("x", n.Sessions.SSH) + " " + strings.Join(users, ","))
	}
	return out
}

// TestOpsView: the API and the CLI report exactly the sessions that are
// open, and drain through the CLI steers new users away while pinned
// users still reach the node.
func TestOpsView(t *testing.T) {
	p := newPool(t, poolOptions{})
	bin := buildPoolgate(t)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append(args, "--admin", "http://"+p.gw.AdminAddr())...).CombinedOutput()
		if err != nil {
			t.Fatalf("poolgate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// A known set: alice twice, bob once, carol once.
	a1, a2, b, c := p.hold("alice"), p.hold("alice"), p.hold("bob"), p.hold("carol")
	want := map[string]string{}
	for _, n := range p.nodes {
		want[n.name] = ""
	}
	want[a1.node] = "xx alice"
	want[b.node] = "x bob"
	want[c.node] = "x carol"
	if got := counts(apiNodes(t, p)); !equalMaps(got, want) {
		t.Fatalf("/api/nodes: %v, want %v", got, want)
	}
	var viaCLI admin.NodesJSON
	if err := json.Unmarshal([]byte(cli("nodes", "--json")), &viaCLI); err != nil {
		t.Fatal(err)
	}
	if got := counts(viaCLI.Nodes); !equalMaps(got, want) {
		t.Fatalf("poolgate nodes --json: %v, want %v", got, want)
	}
	var sessions admin.SessionsJSON
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/sessions", &sessions)
	perUser := map[string]int{}
	for _, s := range sessions.Sessions {
		perUser[s.User]++
		if s.Protocol != "ssh" || !strings.HasPrefix(s.Client, "127.0.0.1:") {
			t.Fatalf("session %+v", s)
		}
	}
	if perUser["alice"] != 2 || perUser["bob"] != 1 || perUser["carol"] != 1 || len(sessions.Sessions) != 4 {
		t.Fatalf("/api/sessions: %v", perUser)
	}
	checkMetrics(t, p, map[string]int{a1.node: 2, b.node: 1, c.node: 1})
	if out := cli("sessions", "--user", "alice"); !strings.Contains(out, "2 sessions") {
		t.Fatalf("poolgate sessions --user alice:\n%s", out)
	}

	// Drain alice's node through the CLI.
	if out := cli("drain", a1.node); !strings.Contains(out, a1.node+": draining (2 ssh") {
		t.Fatalf("poolgate drain:\n%s", out)
	}
	d := p.hold("dave")
	if d.node == a1.node {
		t.Fatalf("new user dave landed on drained node %s", a1.node)
	}
	a3 := p.hold("alice")
	if a3.node != a1.node {
		t.Fatalf("pinned alice went to %s, not her drained node %s", a3.node, a1.node)
	}
	if out := cli("undrain", a1.node); !strings.Contains(out, a1.node+": up") {
		t.Fatalf("poolgate undrain:\n%s", out)
	}

	// All sessions end: what ops see returns to zero.
	for _, h := range []*held{a1, a2, a3, b, c, d} {
		h.close()
	}
	p.waitFor("every session to end", func() bool { return len(p.gw.Balancer().Sessions()) == 0 })
	for name, v := range counts(apiNodes(t, p)) {
		if v != "" {
			t.Fatalf("after every session ended, /api/nodes shows %s: %q", name, v)
		}
	}
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/sessions", &sessions)
	if len(sessions.Sessions) != 0 {
		t.Fatalf("/api/sessions after the end: %+v", sessions.Sessions)
	}
	checkMetrics(t, p, map[string]int{})
}

// checkMetrics scrapes /metrics and compares each node's SSH session gauge
// with want (nodes not named: 0).
func checkMetrics(t *testing.T, p *pool, want map[string]int) {
	t.Helper()
	resp, err := http.Get("http://" + p.gw.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, n := range p.nodes {
		line := fmt.Sprintf(`poolgate_node_sessions{node="%s",protocol="ssh"} %d`, n.name, want[n.name])
		if !strings.Contains(string(body), line+"\n") {
			t.Fatalf("/metrics lacks %q", line)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestAdminOnNonLoopbackNeedsTokens: bound to all interfaces, every
// endpoint and the dashboard answer 401 without a token, and the read-only
// token cannot drain.
func TestAdminOnNonLoopbackNeedsTokens(t *testing.T) {
	dir := t.TempDir()
	write, read := filepath.Join(dir, "write"), filepath.Join(dir, "read")
	os.WriteFile(write, []byte("nonloopback-write-token-0123456789\n"), 0o600)
	os.WriteFile(read, []byte("nonloopback-read-token-0123456789\n"), 0o600)
	p := newPool(t, poolOptions{nodes: 1, cfg: func(c *app.Config) {
		c.Admin.Listen = "0.0.0.0:0"
		c.Admin.TokenFile = write
		c.Admin.ReadTokenFile = read
	}})
	_, port, _ := net.SplitHostPort(p.gw.AdminAddr())
	base := "http://127.0.0.1:" + port
	req := func(method, path, token string) int {
		r, _ := http.NewRequest(method, base+path, nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/", "/api/nodes", "/api/sessions", "/metrics", "/healthz", "/api/access"} {
		if code := req("GET", path, ""); code != 401 {
			t.Errorf("GET %s without a token: %d, want 401", path, code)
		}
	}
	if code := req("POST", "/api/nodes/node-1/drain", ""); code != 401 {
		t.Errorf("drain without a token: %d", code)
	}
	if code := req("GET", "/api/nodes", "nonloopback-read-token-0123456789"); code != 200 {
		t.Errorf("read token reading: %d", code)
	}
	if code := req("POST", "/api/nodes/node-1/drain", "nonloopback-read-token-0123456789"); code != 403 {
		t.Errorf("read token draining: %d, want 403", code)
	}
	if code := req("POST", "/api/nodes/node-1/drain", "nonloopback-write-token-0123456789"); code != 200 {
		t.Errorf("write token draining: %d", code)
	}
}
