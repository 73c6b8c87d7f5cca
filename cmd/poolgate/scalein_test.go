package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/gateway/admin"
	"github.com/poolgate/poolgate/internal/testutil"
)

// TestCLIScaleIn drives 'poolgate scale-in' through the real admin API to
// an Azure source listing a fake scale set: busy and recently used nodes
// are kept with their reason, idle ones deleted.
func TestCLIScaleIn(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "dsvm0", IP: "10.0.0.4"}, azuretest.VM{ID: "1", Name: "dsvm1", IP: "10.0.0.5"}, azuretest.VM{ID: "2", Name: "dsvm2", IP: "10.0.0.6"})
	clock := azuretest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	bal := balancer.New(balancer.Config{AffinityGrace: 10 * time.Minute}, balancer.Options{Now: clock.Now, Rand: func(int) int { return 0 }})
	opts := azure.Options{Pool: bal, Grace: 10 * time.Minute, Now: clock.Now, Credential: azuretest.Credential(), Transport: w.Transport(), Retry: azuretest.NoRetry()}
	src, err := azure.New(discovery.AzureConfig{SubscriptionID: w.Subscription, ResourceGroup: w.ResourceGroup, ScaleSet: w.ScaleSet}, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = src.Run(ctx, bal) }()
	defer func() { cancel(); <-ran }()
	testutil.Eventually(t, 5*time.Second, "the scale set to be listed", func() bool { return len(bal.Nodes()) >= 3 })
	for _, n := range bal.Nodes() {
		bal.SetHealth(n.Name, balancer.SSH, true, "ok")
	}
	clock.Add(3 * time.Hour)
	alice, err := bal.Acquire("alice", balancer.SSH, "192.0.2.1:4000") // on dsvm0
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Release()

	api, err := admin.New(admin.Config{}, bal, admin.Options{Scaler: app.AzureScaler(src)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()

	code, _, errs := runCmd("scale-in", "--admin", srv.URL)
	if code != 2 || !strings.Contains(errs, "--idle is required") {
		t.Fatalf("without --idle: %d %q", code, errs)
	}
	code, out, errs := runCmd("scale-in", "--idle", "2h", "--keep", "2", "--dry-run", "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, "Would delete 1 idle instances:\n  dsvm1 (instance 1), idle 3h0m0s") ||
		!strings.Contains(out, "dsvm0 (instance 0): has 1 sessions") || !strings.Contains(out, "dsvm2 (instance 2): keeping 2 running") {
		t.Fatalf("dry run: %d\n%s%s", code, out, errs)
	}
	if len(w.Deleted()) != 0 {
		t.Fatal("a dry run deleted instances")
	}
	code, out, errs = runCmd("scale-in", "--idle", "2h", "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, "Deleting 2 idle instances") || !strings.Contains(out, "leave 'poolgate nodes' once Azure has deleted them") {
		t.Fatalf("scale-in: %d\n%s%s", code, out, errs)
	}
	cancel()
	<-ran // Run ends and waits for the deletion
	if got := w.Deleted(); len(got) != 1 || strings.Join(got[0], ",") != "1,2" {
		t.Errorf("deleted %v, want instances 1 and 2 in one call", got)
	}
	if _, ok := w.VM("0"); !ok {
		t.Error("alice's instance was deleted")
	}
}

func TestCLINodesWarnsWhenDiscoveryIsStale(t *testing.T) {
	url, _ := apiServer(t, "")
	// apiServer's API has a static list: no warning.
	if _, out, _ := runCmd("nodes", "--admin", url); strings.Contains(out, "WARNING") {
		t.Fatalf("static pool warned:\n%s", out)
	}
	b := balancer.New(balancer.Config{}, balancer.Options{})
	b.SetNodes([]balancer.Node{{Name: "dsvm0", SSH: "10.0.0.4:22"}})
	b.SetHealth("dsvm0", balancer.SSH, true, "ok")
	last := time.Now().Add(-5 * time.Minute)
	api, _ := admin.New(admin.Config{}, b, admin.Options{Discovery: func() admin.DiscoveryJSON {
		return admin.DiscoveryJSON{Source: "azure", Stale: true, LastSuccess: &last, Error: "listing the scale set's VMs: Azure answered 503 ServiceUnavailable", Protected: []string{"dsvm0"}}
	}})
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	code, out, _ := runCmd("nodes", "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, "WARNING: azure discovery is failing (last good listing 5m ago); showing the last good node set.") ||
		!strings.Contains(out, "Azure answered 503") || !strings.Contains(out, "up, protected") {
		t.Fatalf("stale discovery: %d\n%s", code, out)
	}
}
