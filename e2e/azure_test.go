package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/internal/testutil"
)

// azurePool is a pool whose nodes are found in a (fake) Azure scale set:
// real sshd nodes on 127.0.0.N:2222 are the scale set's VMs, with those
// private IPs and their node names as computer names. ARM is the SDK's
// fakes, in the test process; nothing leaves the machine.
func azurePool(t *testing.T, w *azuretest.World, waitUp int, adjust func(*app.Config)) *pool {
	t.Helper()
	return newPool(t, poolOptions{
		waitUp:  waitUp,
		appOpts: []app.Option{app.WithAzure(azure.Options{Credential: azuretest.Credential(), Transport: w.Transport(), Retry: azuretest.NoRetry()})},
		cfg: func(c *app.Config) {
			c.Discovery.Static = nil
			c.Discovery.Azure = &discovery.AzureConfig{
				SubscriptionID: w.Subscription, ResourceGroup: w.ResourceGroup, ScaleSet: w.ScaleSet,
				SSHPort: 2222, Interval: discovery.MinAzureInterval,
			}
			if adjust != nil {
				adjust(c)
			}
		},
	})
}

func vmFor(i int) azuretest.VM {
	return azuretest.VM{ID: fmt.Sprint(i), Name: fmt.Sprintf("node-%d", i+1), IP: fmt.Sprintf("127.0.0.%d", i+2)}
}

// TestAzureScaleSetDiscoveryAndProtection: the gateway finds the running
// instances of a scale set, routes real ssh sessions to them, protects an
// instance from scale-in while a user works there, and lifts the
// protection after the affinity grace.
func TestAzureScaleSetDiscoveryAndProtection(t *testing.T) {
	w := azuretest.New()
	off := vmFor(2)
	off.Power = "deallocated"
	w.Add(vmFor(0), vmFor(1), off)
	p := azurePool(t, w, 2, func(c *app.Config) {
		c.Discovery.Azure.ProtectBusyNodes = true
		c.Balancer.AffinityGrace = 3 * time.Second
	})
	bin := buildPoolgate(t)
	poolgate := func(args ...string) string {
		out, err := exec.Command(bin, append(args, "--admin", "http://"+p.gw.AdminAddr())...).CombinedOutput()
		if err != nil {
			t.Fatalf("poolgate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	nodes := apiNodes(t, p)
	if len(nodes) != 2 || nodes[0].Name != "node-1" || nodes[1].Name != "node-2" {
		t.Fatalf("pool = %+v, want the two running instances node-1 and node-2", nodes)
	}

	alice := p.hold("alice")
	if alice.node != "node-1" && alice.node != "node-2" {
		t.Fatalf("alice landed on %q", alice.node)
	}
	id := map[string]string{"node-1": "0", "node-2": "1"}[alice.node]
	p.waitFor("alice's instance protected from scale-in", func() bool {
		vm, _ := w.VM(id)
		return vm.Protected
	})
	if ups := w.ProtectionUpdates(); len(ups) != 1 || !ups[0].OnlyProtection {
		t.Errorf("protection updates %+v, want one with nothing but the protection policy", ups)
	}
	nodesOut := poolgate("nodes")
	for _, line := range strings.Split(nodesOut, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == alice.node && (f[1] != "up," || f[2] != "protected") {
			t.Errorf("poolgate nodes does not show alice's node protected:\n%s", nodesOut)
		}
	}
	if strings.Count(nodesOut, "protected") != 1 || strings.Contains(nodesOut, "hub") {
		t.Errorf("poolgate nodes:\n%s", nodesOut)
	}
	var body admin.NodesJSON
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/nodes", &body)
	if body.Discovery.Source != "azure" || body.Discovery.Stale || body.Discovery.Live != 2 {
		t.Errorf("/api/nodes discovery = %+v", body.Discovery)
	}

	// Another user lands on the other instance; a second session of
	// alice's keeps her where she is.
	out, _, code := p.sshCmd("bob", `echo "$DSVM_NODE"`)
	if code != 0 || strings.TrimSpace(out) == alice.node {
		t.Errorf("bob: %q (exit %d), want the other node than alice's %s", out, code, alice.node)
	}
	out, _, _ = p.sshCmd("alice", `echo "$DSVM_NODE"`)
	if strings.TrimSpace(out) != alice.node {
		t.Errorf("alice's second session on %q, want %s", out, alice.node)
	}

	// The dashboard marks her node protected.
	requirePeers(t, "chromium")
	tab := newBrowser(t, "").session()
	tab.do("open the dashboard", chromedp.Navigate("http://"+p.gw.AdminAddr()+"/"))
	tab.until("the protected marker", fmt.Sprintf(`(document.querySelector('tr[data-node=%q]')||{innerText:""}).innerText.includes("protected from scale-in")`, alice.node), 15*time.Second)

	// Alice leaves, and ARM starts failing: the pool keeps its last good
	// node set, ops are told, and protection still follows the sessions.
	alice.close()
	w.Fail(azuretest.List, 503, nil, 1000)
	// Azure allows about 4 updates a minute per VM, so the gateway spaces
	// them 15 s apart: the protection goes off up to 15 s after the grace.
	lifted := false
	defer func() {
		if !lifted {
			t.Logf("protection updates: %+v", w.ProtectionUpdates())
		}
	}()
	testutil.Eventually(t, 40*time.Second, "the protection of "+alice.node+" to be lifted after the last session", func() bool {
		vm, _ := w.VM(id)
		return !vm.Protected
	})
	lifted = true
	var forAlice int
	for _, u := range w.ProtectionUpdates() {
		if u.ID == id {
			forAlice++
		}
	}
	if forAlice != 2 {
		t.Errorf("%d updates for alice's instance, want 2: on once, off once", forAlice)
	}
	tab.until("the stale-discovery banner", `document.getElementById("discovery").innerText.includes("azure discovery is failing")`, 20*time.Second)
	tab.screenshot("dashboard-azure-stale.png")
	getJSON(t, "http://"+p.gw.AdminAddr()+"/api/nodes", &body)
	if !body.Discovery.Stale || len(apiNodes(t, p)) != 2 {
		t.Errorf("while ARM fails: discovery %+v, %d nodes; want stale and both nodes kept", body.Discovery, len(apiNodes(t, p)))
	}
	if out := poolgate("nodes"); !strings.Contains(out, "WARNING: azure discovery is failing") || !strings.Contains(out, "503") {
		t.Errorf("poolgate nodes while ARM fails:\n%s", out)
	}
	if out, _, code := p.sshCmd("carol", `echo "$DSVM_NODE"`); code != 0 || !strings.HasPrefix(out, "node-") {
		t.Errorf("a login while ARM fails: exit %d, %q", code, out)
	}
	w.Fail(azuretest.List, 503, nil, 0) // ARM is back
	tab.until("the banner gone", `document.getElementById("discovery").hidden`, 20*time.Second)
}

// TestAzureScaleFromZero: the scale set has no instance; users who ssh in
// are told a node is starting, the capacity is raised once for all of
// them, and they are logged in to the new node when it is up.
func TestAzureScaleFromZero(t *testing.T) {
	w := azuretest.New()
	w.OnCapacity = func(n int64) {
		go func() { // Azure takes a while to create the VM
			time.Sleep(500 * time.Millisecond)
			w.Add(vmFor(0))
		}()
	}
	p := azurePool(t, w, -1, func(c *app.Config) { c.Discovery.Azure.ScaleFromZero = "true" })
	if n := len(p.gw.Balancer().Nodes()); n != 0 {
		t.Fatalf("the scale set is empty but the pool has %d nodes", n)
	}
	type result struct {
		user, out, errOut string
		code              int
	}
	users := []string{"alice", "bob", "carol"}
	results := make(chan result, len(users))
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errOut, code := p.sshCmd(u, `echo "$DSVM_NODE"`)
			results <- result{u, out, errOut, code}
		}()
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.code != 0 || strings.TrimSpace(r.out) != "node-1" {
			t.Errorf("%s: exit %d, out %q, stderr %q; want a login on the started node-1", r.user, r.code, r.out, r.errOut)
			continue
		}
		for _, want := range []string{"one is being started for you", "node node-1 has started; logging you in"} {
			if !strings.Contains(r.errOut, want) {
				t.Errorf("%s was not told %q: %q", r.user, want, r.errOut)
			}
		}
	}
	if got := w.CapacityRaises(); len(got) != 1 || got[0] != 1 {
		t.Errorf("capacity raises %v, want exactly one, to 1", got)
	}
	// With a node running, a login is immediate and says nothing of starting.
	_, errOut, code := p.sshCmd("dave", "true")
	if code != 0 || strings.Contains(errOut, "started") {
		t.Errorf("dave with a node up: exit %d, %q", code, errOut)
	}
}

// TestAzureCredentialFailureStopsStart: a gateway whose Azure credential
// cannot be had does not start, and says what it tried and what it needs.
func TestAzureCredentialFailureStopsStart(t *testing.T) {
	w := azuretest.New()
	cred := azuretest.Credential()
	cred.SetError(fmt.Errorf("ManagedIdentityCredential: no managed identity endpoint is available"))
	cfg := app.Config{StateDir: t.TempDir()}
	cfg.SSH.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery.Azure = &discovery.AzureConfig{SubscriptionID: w.Subscription, ResourceGroup: "rg", ScaleSet: "pool"}
	g, err := app.New(cfg, nil, app.WithAzure(azure.Options{Credential: cred, Transport: w.Transport(), Retry: azuretest.NoRetry()}))
	if err == nil {
		t.Fatalf("gateway started without a credential: %v", g.SSHAddr())
	}
	for _, want := range []string{"could not get an Azure token", "system-assigned managed identity", "no managed identity endpoint", "Reader"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
