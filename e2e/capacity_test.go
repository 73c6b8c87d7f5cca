package e2e

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/discovery/capacity"
)

// TestWarmSpareOnAzure: a pool of two instances, both in use, keeps one
// warm spare: the gateway raises the scale set's capacity once, the new
// instance joins empty, the next user lands on it at once, and ops see
// it in poolgate nodes and /metrics.
func TestWarmSpareOnAzure(t *testing.T) {
	w := azuretest.New()
	w.Add(vmFor(0), vmFor(1))
	w.SetCapacity(2)
	w.OnCapacity = func(n int64) {
		go func() { // Azure takes a while to create the VM
			time.Sleep(300 * time.Millisecond)
			w.Add(vmFor(2))
		}()
	}
	p := azurePool(t, w, 2, func(c *app.Config) {
		c.Capacity = capacity.Config{WarmSpares: 1, MaxInstances: 3, Interval: 200 * time.Millisecond}
	})
	alice, bob := p.hold("alice"), p.hold("bob")
	if alice.node == bob.node {
		t.Fatalf("alice and bob both on %s", alice.node)
	}
	p.waitFor("the spare node-3 in the pool and up", func() bool {
		for _, n := range p.gw.Balancer().Nodes() {
			if n.Name == "node-3" {
				return n.State == balancer.StateUp
			}
		}
		return false
	})
	if got := w.CapacityRaises(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("capacity raises %v, want one, to 3", got)
	}
	out, _, code := p.sshCmd("carol", `echo "$DSVM_NODE"`)
	if code != 0 || strings.TrimSpace(out) != "node-3" {
		t.Fatalf("carol: %q exit %d, want the spare node-3", out, code)
	}
	bin := buildPoolgate(t)
	nodes, err := exec.Command(bin, "nodes", "--admin", "http://"+p.gw.AdminAddr()).CombinedOutput()
	if err != nil || !strings.Contains(string(nodes), "Capacity: ") || !strings.Contains(string(nodes), "last: started 1 instance(s): warm_spares") {
		t.Fatalf("poolgate nodes: %v\n%s", err, nodes)
	}
	resp, err := http.Get("http://" + p.gw.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `poolgate_scale_actions_total{reason="warm_spares"} 1`) {
		t.Fatalf("/metrics lacks the warm_spares action:\n%s", grepLines(string(body), "poolgate_scale"))
	}
}
