package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/internal/testutil"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery/load/loadtest"
)

// loadJSON is a node's "load" in /api/nodes.
type loadJSON struct {
	CPU       *float64   `json:"cpu"`
	Memory    *float64   `json:"memory"`
	GPU       *float64   `json:"gpu"`
	GPUMemory *float64   `json:"gpu_memory"`
	Updated   *time.Time `json:"updated"`
	Stale     bool       `json:"stale"`
	Error     string     `json:"error"`
}

// apiLoads reads each node's load from GET /api/nodes.
func apiLoads(t *testing.T, p *pool) map[string]loadJSON {
	t.Helper()
	var resp struct {
		Nodes []struct {
			Name string   `json:"name"`
			Load loadJSON `json:"load"`
		} `json:"nodes"`
	}
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/nodes", &resp)
	out := map[string]loadJSON{}
	for _, n := range resp.Nodes {
		out[n.Name] = n.Load
	}
	return out
}

// authorize gives a user created during a test the pool's client key.
func (p *pool) authorize(user string) {
	p.t.Helper()
	pub, err := os.ReadFile(p.key + ".pub")
	if err != nil {
		p.t.Fatal(err)
	}
	dir := filepath.Join(p.dir, "keys", user)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func near(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 0.01 }

// busy is a node at load 15.9 on 4 CPUs with a tenth of its memory free.
var busy = loadtest.Load{Load1: 15.9, CPUs: 4, MemAvailable: 0.1}

// TestPlacementByLoad runs real node_exporters, one per sshd node on its
// address, each reading a procfs the test writes, and checks that new
// users go where there is headroom, follow the figures as they change,
// keep their node while they have a session, and that a node whose
// exporter stops is judged by its sessions alone.
func TestPlacementByLoad(t *testing.T) {
	exporters := map[string]*loadtest.NodeExporter{
		"node-1": loadtest.StartNodeExporter(t, "127.0.0.2:0", busy),
		"node-2": loadtest.StartNodeExporter(t, "127.0.0.3:0", loadtest.Idle),
		"node-3": loadtest.StartNodeExporter(t, "127.0.0.4:0", loadtest.Idle),
	}
	const interval = 300 * time.Millisecond
	p := newPool(t, poolOptions{cfg: func(c *app.Config) {
		c.Load.Interval = interval
		for i := range c.Discovery.Static {
			c.Discovery.Static[i].Metrics = exporters[c.Discovery.Static[i].Name].Addr
		}
	}})
	p.waitFor("every node's load", func() bool {
		l := apiLoads(t, p)
		return near(l["node-1"].CPU, 15.9/4) && near(l["node-2"].CPU, 0) && near(l["node-3"].CPU, 0)
	})
	l := apiLoads(t, p)["node-1"]
	if !near(l.Memory, 0.9) || l.GPU != nil || l.GPUMemory != nil || l.Updated == nil || l.Stale {
		t.Fatalf("node-1's load in /api/nodes: %+v", l)
	}

	checkDashboardLoad(t, p)

	// Six new users, each holding a session: node-1 is saturated, so they
	// share node-2 and node-3.
	where := map[string]int{}
	var held []*held
	for _, u := range testUsers {
		h := p.hold(u)
		held = append(held, h)
		where[h.node]++
	}
	if where["node-1"] != 0 || where["node-2"] < 2 || where["node-3"] < 2 {
		t.Fatalf("six new users with node-1 saturated landed %v, want all on node-2 and node-3, about evenly", where)
	}
	onNode2 := ""
	for i, h := range held {
		if h.node == "node-2" {
			onNode2 = testUsers[i]
		}
	}

	// node-2 becomes busy and node-1 idle: within two intervals new users
	// avoid node-2 and reach node-1; a user with a session on node-2 still
	// gets node-2.
	exporters["node-2"].SetLoad(busy)
	exporters["node-1"].SetLoad(loadtest.Idle)
	p.waitFor("node-2 busy and node-1 idle in /api/nodes", func() bool {
		l := apiLoads(t, p)
		return near(l["node-2"].CPU, 15.9/4) && near(l["node-1"].CPU, 0)
	})
	for i := range 3 {
		u := fmt.Sprintf("newcomer%d", i)
		ensureUser(t, u, "")
		p.authorize(u)
		if h := p.hold(u); h.node != "node-1" {
			t.Fatalf("%s landed on %s with node-1 idle, node-2 busy and node-3 holding sessions", u, h.node)
		}
	}
	if out, _, code := p.sshCmd(onNode2, `echo "$DSVM_NODE"`); code != 0 || out != "node-2\n" {
		t.Fatalf("%s, who has a session on node-2, got %q (exit %d): affinity must win over load", onNode2, out, code)
	}

	// node-3's exporter stops: /api/nodes marks its load stale, and node-3
	// still takes users, judged by its sessions (it is never excluded for
	// missing figures).
	exporters["node-3"].Stop()
	exporters["node-1"].SetLoad(busy)
	p.waitFor("node-3's load stale, node-1 busy", func() bool {
		l := apiLoads(t, p)
		return l["node-3"].Stale && near(l["node-1"].CPU, 15.9/4)
	})
	time.Sleep(2 * interval) // the nodes are scored again once per interval
	ensureUser(t, "latecomer", "")
	p.authorize("latecomer")
	if h := p.hold("latecomer"); h.node != "node-3" {
		t.Fatalf("latecomer landed on %s: node-1 and node-2 are busy, node-3 has no figures and must take users by sessions", h.node)
	}
}

// TestFullGPUIsSkipped gives node-1 a dcgm-exporter stand-in (the format
// of NVIDIA's exporter) whose only GPU is fully used: new users go to the
// other nodes while their CPUs are idle on all three.
func TestFullGPUIsSkipped(t *testing.T) {
	cpu := map[string]*loadtest.NodeExporter{
		"node-1": loadtest.StartNodeExporter(t, "127.0.0.2:0", loadtest.Idle),
		"node-2": loadtest.StartNodeExporter(t, "127.0.0.3:0", loadtest.Idle),
	}
	gpu := loadtest.StartDCGM(t, "127.0.0.2:0", loadtest.GPU{Util: 100, UsedMiB: 39000, FreeMiB: 1000})
	p := newPool(t, poolOptions{nodes: 2, cfg: func(c *app.Config) {
		c.Load.Interval = 300 * time.Millisecond
		for i := range c.Discovery.Static {
			c.Discovery.Static[i].Metrics = cpu[c.Discovery.Static[i].Name].Addr
		}
		c.Discovery.Static[0].GPUMetrics = gpu.Addr
	}})
	p.waitFor("node-1's GPU in /api/nodes", func() bool {
		l := apiLoads(t, p)["node-1"]
		return near(l.GPU, 1) && near(l.CPU, 0)
	})
	for _, u := range testUsers[:3] {
		if h := p.hold(u); h.node != "node-2" {
			t.Fatalf("%s landed on %s, whose GPU is full", u, h.node)
		}
	}
}

// checkDashboardLoad opens the dashboard in headless Chromium: node-1's
// row shows its CPU and memory and a history of its CPU since the gateway
// started (the page was not open before), and node-1's figures are marked
// over the limit. It leaves a screenshot.
func checkDashboardLoad(t *testing.T, p *pool) {
	t.Helper()
	requirePeers(t, "chromium")
	ctx, cancel := context.WithTimeout(newBrowser(t, "").root, 60*time.Second)
	defer cancel()
	read := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("reading the dashboard: %v", err)
		}
		return s
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+p.gw.AdminAddr()+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-node="node-1"] td.load`))); err != nil {
		t.Fatalf("opening the dashboard: %v", err)
	}
	row := `document.querySelector('tr[data-node="node-1"] td.load')`
	testutil.Eventually(t, 20*time.Second, "node-1's load and its history on the dashboard", func() bool {
		got := read(`(() => { const c = ` + row + `; return c ? c.innerText.trim() + "|" + c.querySelectorAll("svg.spark.load polyline").length : "" })()`)
		return got == "CPU 3.98 · MEM 90%|1" || got == "CPU 3.97 · MEM 90%|1"
	})
	if hot := read(`(() => { const c = ` + row + `; return String(c.querySelectorAll(".hot").length) })()`); hot != "2" {
		t.Fatalf("node-1's figures over the limit are not marked: %s marked", hot)
	}
	if other := read(`document.querySelector('tr[data-node="node-2"] td.load').innerText`); other != "CPU 0.00 · MEM 0%" {
		t.Fatalf("node-2's load on the dashboard: %q", other)
	}
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(filepath.Join(os.TempDir(), "poolgate-dashboard-load.png"), png, 0o644)
	}
}
