package azure

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/internal/testutil"
)

func fromZero(c *discovery.AzureConfig) {
	c.ScaleFromZero = discovery.ScaleFromZeroOn
	c.MinCapacity = 2
}

func TestScaleFromZeroRaisesCapacityOnceForManyUsers(t *testing.T) {
	w := azuretest.New()
	w.OnCapacity = func(n int64) {
		w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4", Power: "starting"}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5", Power: "starting"})
	}
	f := newFixture(t, w, fixtureOpts{cfg: fromZero, withPool: true})
	f.poll()
	if _, err := f.bal.Acquire("u0", balancer.SSH, "c"); !errors.Is(err, balancer.ErrNoNode) {
		t.Fatalf("empty pool: Acquire = %v", err)
	}

	var wg sync.WaitGroup
	untils := make([]time.Time, 20)
	oks := make([]bool, 20)
	for i := range untils {
		wg.Add(1)
		go func() { defer wg.Done(); untils[i], oks[i] = f.src.StartNode() }()
	}
	wg.Wait()
	want := f.clock.Now().Add(10 * time.Minute)
	for i := range untils {
		if !oks[i] || !untils[i].Equal(want) {
			t.Fatalf("user %d: StartNode = %v, %v; want to wait until %v", i, untils[i], oks[i], want)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the capacity raise", func() bool { return len(w.CapacityRaises()) > 0 })
	if !f.src.Status().Starting {
		t.Error("status does not say a node is starting")
	}
	if wait, _ := f.poll(); wait != startingPoll {
		t.Errorf("while a node starts, listings every %s, want %s", wait, startingPoll)
	}
	if len(f.rec.nodes) != 0 {
		t.Errorf("instances still starting became nodes: %v", f.rec.names())
	}
	w.Set("0", func(vm *azuretest.VM) { vm.Power = "running" })
	w.Set("1", func(vm *azuretest.VM) { vm.Power = "running" })
	f.clock.Add(startingPoll)
	f.poll() // lists both, marks them healthy, and sees the start done
	if f.src.Status().Starting {
		t.Error("status still says starting with nodes up")
	}
	for i := 0; i < 5; i++ {
		l, err := f.bal.Acquire("user"+string(rune('a'+i)), balancer.SSH, "c")
		if err != nil {
			t.Fatalf("after the start: %v", err)
		}
		l.Release()
	}
	if got := w.CapacityRaises(); len(got) != 1 || got[0] != 2 {
		t.Errorf("capacity raises = %v, want exactly one, to min_capacity 2", got)
	}
	if _, ok := f.src.StartNode(); ok {
		t.Error("with nodes running, StartNode must report that none is coming")
	}
}

func TestScaleFromZeroFailureRefusesAtOnce(t *testing.T) {
	w := azuretest.New()
	w.Fail(azuretest.Capacity, http.StatusForbidden, nil, 1)
	f := newFixture(t, w, fixtureOpts{cfg: fromZero, withPool: true})
	f.poll()
	if _, ok := f.src.StartNode(); !ok {
		t.Fatal("StartNode refused on an empty pool")
	}
	testutil.Eventually(t, 5*time.Second, "the failed start to end", func() bool { return !f.src.Status().Starting })
	if _, ok := f.src.StartNode(); ok {
		t.Error("right after a failed start, users must be refused rather than kept waiting")
	}
	f.clock.Add(startRetry)
	if _, ok := f.src.StartNode(); !ok {
		t.Error("a minute after a failed start, a new user must try again")
	}
	testutil.Eventually(t, 5*time.Second, "the second raise", func() bool { return len(w.CapacityRaises()) == 1 })
}

func TestScaleFromZeroWithCapacityAlreadyThereAndTimeout(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4", Power: "starting"}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5", Power: "starting"})
	f := newFixture(t, w, fixtureOpts{cfg: fromZero, withPool: true})
	f.poll()
	until, ok := f.src.StartNode()
	if !ok {
		t.Fatal("no instance running: StartNode must let the user wait")
	}
	testutil.Eventually(t, 5*time.Second, "the capacity check", func() bool { return w.Calls(azuretest.Get) >= 2 })
	f.src.Close() // wait for the background work
	if got := w.CapacityRaises(); len(got) != 0 {
		t.Errorf("capacity already 2: raises %v, want none", got)
	}
	f.clock.Add(until.Sub(f.clock.Now()) + time.Second)
	f.src.sync()
	if _, ok := f.src.StartNode(); !ok {
		// The timed-out start ends; a new one begins for a new user.
		t.Error("after a timed-out start, a new user starts a new one")
	}
}

func TestScaleFromZeroStartsStoppedInstances(t *testing.T) {
	// The pool was deallocated overnight: its instances count in the
	// capacity, so raising it would add nothing. Start them instead.
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4", Power: "deallocated"},
		azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5", Power: "deallocated"},
		azuretest.VM{ID: "2", Name: "n2", IP: "10.0.0.6", Power: "stopped"})
	f := newFixture(t, w, fixtureOpts{cfg: fromZero, withPool: true}) // min_capacity 2
	f.poll()
	if _, ok := f.src.StartNode(); !ok {
		t.Fatal("StartNode refused with every instance stopped")
	}
	testutil.Eventually(t, 5*time.Second, "the start call", func() bool { return len(w.Started()) > 0 })
	f.src.Close()
	if got := w.Started(); len(got) != 1 || strings.Join(got[0], ",") != "0,1" {
		t.Errorf("start calls %v, want one starting min_capacity (2) stopped instances", got)
	}
	if got := w.CapacityRaises(); len(got) != 0 {
		t.Errorf("capacity raises %v, want none", got)
	}
	w.Set("0", func(vm *azuretest.VM) { vm.Power = "running" })
	f.poll()
	if !equal(f.rec.names(), []string{"n0"}) || f.src.Status().Starting {
		t.Errorf("after the start: nodes %v, starting %v", f.rec.names(), f.src.Status().Starting)
	}
}

func TestScaleFromZeroOff(t *testing.T) {
	w := azuretest.New()
	f := newFixture(t, w, fixtureOpts{withPool: true})
	f.poll()
	if _, ok := f.src.StartNode(); ok {
		t.Error("scale_from_zero is off, yet StartNode offered a wait")
	}
}

func TestScaleInDeletesOnlyIdleInstances(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "busy", IP: "10.0.0.4"}, azuretest.VM{ID: "1", Name: "idle-long", IP: "10.0.0.5"},
		azuretest.VM{ID: "2", Name: "idle-short", IP: "10.0.0.6"}, azuretest.VM{ID: "3", Name: "grace", IP: "10.0.0.7"},
		azuretest.VM{ID: "4", Name: "idle-longer", IP: "10.0.0.8"}, azuretest.VM{ID: "5", Name: "stopped", IP: "10.0.0.9", Power: "deallocated"})
	grace := 30 * time.Minute
	f := newFixture(t, w, fixtureOpts{withPool: true, grace: grace})
	f.poll()
	drainAllBut := func(keep string) {
		for _, n := range f.bal.Nodes() {
			if n.Name == keep {
				_ = f.bal.Undrain(n.Name)
			} else {
				_ = f.bal.Drain(n.Name)
			}
		}
	}
	session := func(user, node string) *balancer.Lease {
		drainAllBut(node)
		l, err := f.bal.Acquire(user, balancer.SSH, "c")
		if err != nil || l.Node().Name != node {
			t.Fatalf("%s: %v on %v", user, err, l)
		}
		return l
	}
	// At scale-in: idle-longer idle 3h, idle-long 2h, idle-short 40m
	// (past the 30m grace), grace's user left 10m ago (pinned).
	session("u1", "idle-longer").Release()
	f.clock.Add(time.Hour)
	session("u2", "idle-long").Release()
	f.clock.Add(time.Hour + 20*time.Minute)
	session("u4", "idle-short").Release()
	f.clock.Add(30 * time.Minute)
	session("u3", "grace").Release()
	f.clock.Add(10 * time.Minute)
	alice := session("alice", "busy")
	defer alice.Release()
	drainAllBut("")
	for _, n := range []string{"busy", "idle-long", "idle-short", "grace", "idle-longer"} {
		_ = f.bal.Undrain(n)
	}
	_ = f.bal.Drain("idle-longer") // drained by ops: scale-in leaves that as it was

	dry, err := f.src.ScaleIn(context.Background(), time.Hour, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	names := func(ns []ScaleInNode) string {
		var s []string
		for _, n := range ns {
			s = append(s, n.Node)
		}
		return strings.Join(s, ",")
	}
	if got := names(dry.Deleted); got != "idle-longer,idle-long" {
		t.Fatalf("dry run would delete %q, want the two idle for an hour or more, longest first", got)
	}
	reasons := map[string]string{}
	for _, k := range dry.Kept {
		reasons[k.Node] = k.Reason
	}
	for node, want := range map[string]string{"busy": "has 1 sessions", "grace": "1 users within the affinity grace", "idle-short": "idle for only 40m0s", "stopped": "not running (succeeded, deallocated)"} {
		if !strings.Contains(reasons[node], want) {
			t.Errorf("kept %s for %q, want %q", node, reasons[node], want)
		}
	}
	if len(w.Deleted()) != 0 {
		t.Fatal("a dry run deleted instances")
	}

	kept, err := f.src.ScaleIn(context.Background(), time.Hour, 4, false)
	if err != nil {
		t.Fatal(err)
	}
	if names(kept.Deleted) != "idle-longer" {
		t.Errorf("with keep 4 of 5 running, deleted %q, want only the longest idle", names(kept.Deleted))
	}
	f.src.Close()
	if got := w.Deleted(); len(got) != 1 || strings.Join(got[0], ",") != "4" {
		t.Fatalf("delete calls = %v, want one with instance 4", got)
	}
	f.clock.Add(time.Minute)
	f.poll()
	if strings.Contains(strings.Join(f.rec.names(), ","), "idle-longer") {
		t.Errorf("deleted instance still in the pool: %v", f.rec.names())
	}
}

func TestScaleInUndrainsWhenDeleteFails(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5"})
	f := newFixture(t, w, fixtureOpts{withPool: true, grace: time.Minute})
	f.poll()
	f.clock.Add(2 * time.Hour)
	w.Fail(azuretest.Delete, http.StatusConflict, nil, 1)
	if _, err := f.src.ScaleIn(context.Background(), time.Hour, 0, false); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("ScaleIn with ARM refusing the delete: %v", err)
	}
	for _, n := range f.bal.Nodes() {
		if n.State != balancer.StateUp {
			t.Errorf("%s left %s after a failed delete", n.Name, n.State)
		}
	}
	w.Fail(azuretest.List, http.StatusInternalServerError, nil, 1)
	f.poll()
	if _, err := f.src.ScaleIn(context.Background(), time.Hour, 0, false); !errors.Is(err, ErrStale) {
		t.Errorf("ScaleIn on a stale listing: %v, want ErrStale", err)
	}
}
