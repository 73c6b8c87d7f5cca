package azure

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a NodeSetter that keeps what it was given.
type recorder struct {
	mu    sync.Mutex
	sets  int
	nodes []balancer.Node
}

func (r *recorder) SetNodes(n []balancer.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets++
	r.nodes = append([]balancer.Node(nil), n...)
}

func (r *recorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.nodes {
		out = append(out, n.Name)
	}
	sort.Strings(out)
	return out
}

type fixture struct {
	t     *testing.T
	w     *azuretest.World
	src   *Source
	clock *azuretest.Clock
	rec   *recorder
	bal   *balancer.Balancer // nil unless withPool
}

type fixtureOpts struct {
	cfg      func(*discovery.AzureConfig)
	withPool bool
	grace    time.Duration
}

func newFixture(t *testing.T, w *azuretest.World, o fixtureOpts) *fixture {
	t.Helper()
	f := &fixture{t: t, w: w, clock: azuretest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)), rec: &recorder{}}
	cfg := discovery.AzureConfig{SubscriptionID: w.Subscription, ResourceGroup: w.ResourceGroup, ScaleSet: w.ScaleSet}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	opts := Options{
		Credential: azuretest.Credential(), Transport: w.Transport(), Retry: azuretest.NoRetry(),
		Logger: zaptest.NewLogger(t), Now: f.clock.Now, Grace: o.grace,
	}
	if o.withPool {
		f.bal = balancer.New(balancer.Config{AffinityGrace: o.grace}, balancer.Options{Now: f.clock.Now, Rand: func(int) int { return 0 }})
		opts.Pool = f.bal
	}
	src, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	f.src = src
	return f
}

// poll lists once and, with a pool, passes the nodes on and marks them
// healthy, as the health checker would.
func (f *fixture) poll() (wait, throttled time.Duration) {
	f.t.Helper()
	var to discovery.NodeSetter = f.rec
	if f.bal != nil {
		to = discovery.Fanout{f.bal, f.rec}
	}
	wait, throttled = f.src.poll(context.Background(), to)
	if f.bal != nil {
		for _, n := range f.rec.nodes {
			f.bal.SetHealth(n.Name, balancer.SSH, true, "ok")
			f.bal.SetHealth(n.Name, balancer.HTTP, true, "ok")
		}
		f.src.sync() // as the 2 s sync ticker would, with the health known
	}
	return wait, throttled
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestListingTakesOnlyLiveInstances(t *testing.T) {
	w := azuretest.New()
	w.Add(
		azuretest.VM{ID: "0", Name: "dsvm000000", IP: "10.0.1.4"},
		azuretest.VM{ID: "1", Name: "dsvm000001", IP: "10.0.1.5", Power: "deallocated"},
		azuretest.VM{ID: "2", Name: "dsvm000002", IP: "10.0.1.6", Power: "stopped"},
		azuretest.VM{ID: "3", Name: "dsvm000003", IP: "10.0.1.7", Power: "starting"},
		azuretest.VM{ID: "4", Name: "dsvm000004", IP: "10.0.1.8", Provisioning: "Creating", Power: "running"},
		azuretest.VM{ID: "5", Name: "dsvm000005", IP: "10.0.1.9", Provisioning: "Failed", Power: "running"},
		azuretest.VM{ID: "6", Name: "dsvm000006", IP: "10.0.1.10", Provisioning: "Deleting", Power: "running"},
		azuretest.VM{ID: "7", Name: "dsvm000007", IP: "10.0.1.11", Provisioning: "Updating", Power: "running"},
		azuretest.VM{ID: "8", Name: "dsvm000008", IP: "10.0.1.12"},
	)
	f := newFixture(t, w, fixtureOpts{cfg: func(c *discovery.AzureConfig) { c.SSHPort = 2222; c.HTTPPort = 8443; c.Weight = 4 }})
	f.poll()
	if got, want := f.rec.names(), []string{"dsvm000000", "dsvm000008"}; !equal(got, want) {
		t.Fatalf("nodes = %v, want only the running, provisioned instances %v", got, want)
	}
	n := f.rec.nodes[0]
	if n.SSH != "10.0.1.4:2222" || n.HTTP != "10.0.1.4:8443" || n.Weight != 4 {
		t.Errorf("node = %+v, want the private IP with the configured ports and weight", n)
	}
	f.src.noHTTP = true
	f.poll()
	if n := f.rec.nodes[0]; n.HTTP != "" || n.SSH != "10.0.1.4:2222" {
		t.Errorf("with the HTTP gateway off: node = %+v, want no hub address", n)
	}
	st := f.src.Status()
	if st.Instances != 9 || st.Live != 2 || st.Stale() || st.LastSuccess.IsZero() {
		t.Errorf("status = %+v, want 9 instances, 2 live, fresh", st)
	}
	var states []string
	for _, in := range f.src.Instances() {
		states = append(states, in.Provisioning+"/"+in.Power)
	}
	if want := "succeeded/running,succeeded/deallocated,succeeded/stopped,succeeded/starting,creating/running,failed/running,deleting/running,updating/running,succeeded/running"; strings.Join(states, ",") != want {
		t.Errorf("instance states = %v", states)
	}
}

func TestListingFollowsPages(t *testing.T) {
	w := azuretest.New()
	w.PageSize = 3
	for i, name := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		w.Add(azuretest.VM{ID: string(rune('0' + i)), Name: name, IP: "10.0.0." + string(rune('1'+i))})
	}
	f := newFixture(t, w, fixtureOpts{})
	f.poll()
	if got := f.rec.names(); !equal(got, []string{"a", "b", "c", "d", "e", "f", "g"}) {
		t.Fatalf("nodes across 3 pages = %v", got)
	}
	if got := w.Calls(azuretest.List); got != 3 {
		t.Errorf("list calls = %d, want 3 (one a page)", got)
	}
}

func TestUniformAndFlexibleAddresses(t *testing.T) {
	for _, flexible := range []bool{false, true} {
		name := "uniform"
		if flexible {
			name = "flexible"
		}
		t.Run(name, func(t *testing.T) {
			w := azuretest.New()
			w.Flexible = flexible
			w.Add(azuretest.VM{ID: "pool_1a", Name: "n1", IP: "10.0.0.4"}, azuretest.VM{ID: "pool_2b", Name: "n2", IP: "10.0.0.5"},
				azuretest.VM{ID: "pool_3c", Name: "n3", IP: "10.0.0.6", Power: "deallocated"})
			f := newFixture(t, w, fixtureOpts{})
			f.poll()
			got := map[string]string{}
			for _, n := range f.rec.nodes {
				got[n.Name] = n.SSH
			}
			if len(got) != 2 || got["n1"] != "10.0.0.4:22" || got["n2"] != "10.0.0.5:22" {
				t.Fatalf("nodes = %v, want n1 and n2 at their private IPs", got)
			}
			nicCalls := func() int { return w.Calls(azuretest.NIC) + w.Calls(azuretest.NICs) }
			if flexible {
				if w.Calls(azuretest.NIC) != 2 || w.Calls(azuretest.NICs) != 0 {
					t.Errorf("flexible: %d NIC gets and %d NIC lists, want one get per running VM and no list", w.Calls(azuretest.NIC), w.Calls(azuretest.NICs))
				}
			} else if w.Calls(azuretest.NICs) != 1 || w.Calls(azuretest.NIC) != 0 {
				t.Errorf("uniform: %d NIC lists and %d NIC gets, want one list", w.Calls(azuretest.NICs), w.Calls(azuretest.NIC))
			}
			before := nicCalls()
			f.poll()
			if nicCalls() != before {
				t.Errorf("a second listing of the same VMs made %d NIC calls, want none (IPs are remembered)", nicCalls()-before)
			}
			w.Add(azuretest.VM{ID: "pool_4d", Name: "n4", IP: "10.0.0.7"})
			f.poll()
			if !equal(f.rec.names(), []string{"n1", "n2", "n4"}) {
				t.Errorf("after a scale-out: %v", f.rec.names())
			}
			if nicCalls() != before+1 {
				t.Errorf("a new VM cost %d NIC calls, want 1", nicCalls()-before)
			}
			if w.Calls(azuretest.Get) != 1 {
				t.Errorf("scale set read %d times, want once (its orchestration mode does not change)", w.Calls(azuretest.Get))
			}
		})
	}
}

func TestInstanceRemovedBetweenPolls(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5"})
	f := newFixture(t, w, fixtureOpts{withPool: true})
	f.poll()
	lease, err := f.bal.Acquire("alice", balancer.SSH, "client")
	if err != nil {
		t.Fatal(err)
	}
	gone := lease.Node().Name
	id := map[string]string{"n0": "0", "n1": "1"}[gone]
	w.Remove(id)
	f.poll()
	var names []string
	for _, n := range f.bal.Nodes() {
		names = append(names, n.Name)
	}
	if len(names) != 1 || names[0] == gone {
		t.Fatalf("after %s was deleted the pool has %v", gone, names)
	}
	// Her open session is left to end on its own; her next one moves.
	next, err := f.bal.Acquire("alice", balancer.SSH, "client")
	if err != nil {
		t.Fatal(err)
	}
	if next.Node().Name == gone || next.Repinned() != gone {
		t.Errorf("alice's next session went to %s (repinned from %q), want the remaining node, told she left %s", next.Node().Name, next.Repinned(), gone)
	}
	lease.Release()
	next.Release()
}

func TestOutageKeepsLastGoodSetMarkedStale(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5"})
	f := newFixture(t, w, fixtureOpts{})
	f.poll()
	listed := f.clock.Now()
	f.clock.Add(30 * time.Second)
	w.Fail(azuretest.List, http.StatusInternalServerError, nil, 2)
	sets := f.rec.sets
	for i := 0; i < 2; i++ {
		wait, _ := f.poll()
		if wait != 30*time.Second {
			t.Errorf("wait after a failure = %s, want the interval", wait)
		}
		f.clock.Add(30 * time.Second)
	}
	if f.rec.sets != sets || !equal(f.rec.names(), []string{"n0", "n1"}) {
		t.Fatalf("an outage changed the node set to %v (%d pushes)", f.rec.names(), f.rec.sets-sets)
	}
	st := f.src.Status()
	if !st.Stale() || !strings.Contains(st.Error, "500") || !st.LastSuccess.Equal(listed) {
		t.Fatalf("status during the outage = %+v, want stale since %v with the error", st, listed)
	}
	f.poll()
	if st := f.src.Status(); st.Stale() || !st.LastSuccess.Equal(f.clock.Now()) {
		t.Errorf("status after recovery = %+v, want fresh", st)
	}
}

func TestThrottlingIsWaitedOut(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"})
	f := newFixture(t, w, fixtureOpts{})
	f.poll()

	w.Fail(azuretest.List, http.StatusTooManyRequests, http.Header{"Retry-After": {"170"}}, 1)
	wait, throttled := f.poll()
	if wait != 170*time.Second || throttled != 170*time.Second {
		t.Errorf("after a 429 with Retry-After: 170, wait %s (throttled %s), want 170s", wait, throttled)
	}
	if !f.src.Status().Stale() || !equal(f.rec.names(), []string{"n0"}) {
		t.Errorf("a 429 must keep the node set, marked stale: %+v %v", f.src.Status(), f.rec.names())
	}

	date := f.clock.Now().Add(4 * time.Minute).Format(http.TimeFormat)
	w.Fail(azuretest.List, http.StatusTooManyRequests, http.Header{"Retry-After": {date}}, 1)
	if wait, _ := f.poll(); wait != 4*time.Minute {
		t.Errorf("after a 429 with Retry-After as a date 4 minutes ahead, wait %s", wait)
	}

	w.Fail(azuretest.List, http.StatusTooManyRequests, nil, 1)
	if wait, _ := f.poll(); wait != time.Minute {
		t.Errorf("after a 429 without Retry-After, wait %s, want a minute", wait)
	}

	// ARM's remaining-quota headers: one call left in the 3-minute bucket
	// spreads what is left over the window.
	w.SetHeader(headerRemainingResource, "Microsoft.Compute/HighCostGetVMScaleSet3Min;1,Microsoft.Compute/HighCostGetVMScaleSet30Min;200")
	if wait, _ := f.poll(); wait != 90*time.Second {
		t.Errorf("with 1 call left of a 3-minute bucket, wait %s, want 90s", wait)
	}
	w.SetHeader(headerRemainingResource, "Microsoft.Compute/HighCostGetVMScaleSet3Min;100,Microsoft.Compute/HighCostGetVMScaleSet30Min;500")
	if wait, _ := f.poll(); wait != 30*time.Second {
		t.Errorf("with quota to spare, wait %s, want the 30s interval", wait)
	}
	if w.Calls(azuretest.List) != 6 {
		t.Errorf("list calls = %d, want 6: the SDK must not retry a 429 on its own", w.Calls(azuretest.List))
	}
}

func TestCheckSaysWhatWasTriedAndWhatIsNeeded(t *testing.T) {
	w := azuretest.New()
	failing := azuretest.Credential()
	failing.SetError(errors.New("ManagedIdentityCredential: no response from the IMDS endpoint"))
	tests := []struct {
		name string
		cfg  func(*discovery.AzureConfig)
		want []string
	}{
		{"system-assigned", nil, []string{"system-assigned managed identity", "IMDS", "Reader", "Virtual Machine Contributor"}},
		{"user-assigned", func(c *discovery.AzureConfig) { c.ClientID = "11111111-2222-3333-4444-555555555555" }, []string{"user-assigned managed identity with client ID 11111111-2222-3333-4444-555555555555"}},
		{"default chain", func(c *discovery.AzureConfig) { c.Credential = "default" }, []string{"DefaultAzureCredential", "Azure CLI", "Reader"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := discovery.AzureConfig{SubscriptionID: w.Subscription, ResourceGroup: "rg", ScaleSet: "pool"}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			src, err := New(cfg, Options{Credential: failing, Transport: w.Transport()})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			err = src.Check(context.Background())
			if err == nil {
				t.Fatal("Check with a failing credential succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	if w.Calls(azuretest.Get) != 0 {
		t.Error("without a token, nothing may be sent to ARM")
	}

	for status, want := range map[int]string{403: "Reader", 404: `scale set "pool" not found in resource group "rg"`} {
		w := azuretest.New()
		w.Fail(azuretest.Get, status, nil, 1)
		f := newFixture(t, w, fixtureOpts{})
		err := f.src.Check(context.Background())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check with ARM answering %d: %v, want a message with %q", status, err, want)
		}
	}
	w = azuretest.New()
	w.Fail(azuretest.Get, 503, nil, 1)
	f := newFixture(t, w, fixtureOpts{})
	if err := f.src.Check(context.Background()); err != nil {
		t.Errorf("a passing ARM fault at start must not stop the gateway: %v", err)
	}
}

func TestRunListsOnItsOwnAndStops(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"})
	f := newFixture(t, w, fixtureOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.src.Run(ctx, f.rec) }()
	testutil.Eventually(t, 5*time.Second, "Run to push the nodes", func() bool { return len(f.rec.names()) > 0 })
	if !equal(f.rec.names(), []string{"n0"}) {
		t.Errorf("Run pushed %v", f.rec.names())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	good := discovery.AzureConfig{SubscriptionID: "00000000-0000-0000-0000-000000000001", ResourceGroup: "rg", ScaleSet: "pool"}
	tests := []struct {
		change func(*discovery.AzureConfig)
		want   string
	}{
		{func(c *discovery.AzureConfig) { c.SubscriptionID = "" }, "subscription_id: missing"},
		{func(c *discovery.AzureConfig) { c.SubscriptionID = "my-sub" }, "subscription_id: \"my-sub\" is not a subscription ID"},
		{func(c *discovery.AzureConfig) { c.ResourceGroup = "" }, "resource_group: missing"},
		{func(c *discovery.AzureConfig) { c.ScaleSet = "a/b" }, "scale_set: \"a/b\" is not a scale set name"},
		{func(c *discovery.AzureConfig) { c.Credential = "password" }, "credential: \"password\" is not one of"},
		{func(c *discovery.AzureConfig) {
			c.Credential = "default"
			c.ClientID = "11111111-2222-3333-4444-555555555555"
		}, "client_id: only used with"},
		{func(c *discovery.AzureConfig) { c.Interval = 2 * time.Second }, "interval: 2s is too short"},
		{func(c *discovery.AzureConfig) { c.SSHPort = 70000 }, "ssh_port: must be from 1 to 65535"},
		{func(c *discovery.AzureConfig) { c.StartTimeout = time.Second }, "start_timeout: 1s is too short"},
	}
	for _, tc := range tests {
		cfg := good
		tc.change(&cfg)
		_, err := New(cfg, Options{Credential: azuretest.Credential()})
		if err == nil || !strings.Contains(err.Error(), "discovery.azure."+tc.want) {
			t.Errorf("error = %v, want %q", err, "discovery.azure."+tc.want)
		}
	}
}
