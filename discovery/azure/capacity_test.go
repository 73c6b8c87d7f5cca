package azure

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/discovery/capacity"
)

func vm(i int) azuretest.VM {
	return azuretest.VM{ID: string(rune('0' + i)), Name: "n" + string(rune('0'+i)), IP: "10.0.0." + string(rune('4'+i))}
}

// TestWarmSpareStartsOneInstance: with every node in use and one warm
// spare wanted, the controller raises the capacity by one, once; the new
// instance, once up, is the spare; max_instances bounds it.
func TestWarmSpareStartsOneInstance(t *testing.T) {
	w := azuretest.New()
	w.Add(vm(0), vm(1))
	w.SetCapacity(2)
	f := newFixture(t, w, fixtureOpts{withPool: true})
	f.poll()
	for _, u := range []string{"alice", "bob"} {
		if _, err := f.bal.Acquire(u, balancer.SSH, "c"); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	cfg := capacity.Config{WarmSpares: 1, MaxInstances: 3, Cooldown: time.Minute}.WithDefaults()
	o := CapacityOptions{Metrics: reg}
	registerActions(t, f.src, reg)
	f.src.capacityOnce(context.Background(), cfg, o)
	if got := w.CapacityRaises(); !slices.Equal(got, []int64{3}) {
		t.Fatalf("capacity raises %v, want one to 3", got)
	}
	if n := testutil.ToFloat64(f.src.capa.actions.WithLabelValues(capacity.ReasonWarmSpares)); n != 1 {
		t.Fatalf("poolgate_scale_actions_total{reason=warm_spares} = %v, want 1", n)
	}
	// Asked for and not listed yet: it counts as the spare already.
	f.clock.Add(2 * time.Minute)
	f.src.capacityOnce(context.Background(), cfg, o)
	if got := w.CapacityRaises(); len(got) != 1 {
		t.Fatalf("a second raise while the first instance boots: %v", got)
	}
	if st := f.src.CapacityStatus(); st.Starting != 1 || st.Spares != 1 || !st.Leading {
		t.Fatalf("status %+v, want one starting, counted as the spare", st)
	}
	w.Add(vm(2))
	f.poll()
	f.clock.Add(2 * time.Minute)
	f.src.capacityOnce(context.Background(), cfg, o)
	if st := f.src.CapacityStatus(); st.Starting != 0 || st.Spares != 1 || len(w.CapacityRaises()) != 1 {
		t.Fatalf("with n2 up and empty: %+v, raises %v", st, w.CapacityRaises())
	}
	// n2 taken too: max_instances 3 stops a fourth.
	if _, err := f.bal.Acquire("carol", balancer.SSH, "c"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Minute)
	f.src.capacityOnce(context.Background(), cfg, o)
	if len(w.CapacityRaises()) != 1 {
		t.Fatalf("raised past max_instances: %v", w.CapacityRaises())
	}
}

// registerActions sets up the metric as RunCapacity does.
func registerActions(t *testing.T, s *Source, reg *prometheus.Registry) {
	t.Helper()
	s.capa.actions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "poolgate_scale_actions_total", Help: "h"}, []string{"reason"})
	reg.MustRegister(s.capa.actions)
}

// TestIdleNodesGoNothingInUse: idle past scale_in_idle, beyond the spare,
// an instance is deleted; nodes with sessions or pins in their grace are
// never deleted.
func TestIdleNodesGoNothingInUse(t *testing.T) {
	w := azuretest.New()
	w.Add(vm(0), vm(1), vm(2), vm(3))
	w.SetCapacity(4)
	f := newFixture(t, w, fixtureOpts{withPool: true, grace: 30 * time.Minute})
	f.poll()
	busy, err := f.bal.AcquireOn("alice", balancer.SSH, "c", "n0", balancer.ByUser)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Release()
	f.clock.Add(90 * time.Minute)
	left, err := f.bal.AcquireOn("bob", balancer.SSH, "c", "n1", balancer.ByUser)
	if err != nil {
		t.Fatal(err)
	}
	left.Release() // bob's pin on n1 holds for 30 minutes
	reg := prometheus.NewRegistry()
	registerActions(t, f.src, reg)
	cfg := capacity.Config{WarmSpares: 1, MinInstances: 1, MaxInstances: 4, ScaleInIdle: time.Hour}.WithDefaults()
	f.src.capacityOnce(context.Background(), cfg, CapacityOptions{})
	del := w.Deleted()
	if len(del) != 1 || len(del[0]) != 1 {
		t.Fatalf("deleted %v, want one idle instance (n2 or n3, the other kept as the spare)", del)
	}
	if id := del[0][0]; id != "2" && id != "3" {
		t.Fatalf("deleted instance %s: it has a session or a pin", id)
	}
	if n := testutil.ToFloat64(f.src.capa.actions.WithLabelValues(capacity.ReasonIdle)); n != 1 {
		t.Fatalf("poolgate_scale_actions_total{reason=idle} = %v", n)
	}
	if len(w.CapacityRaises()) != 0 {
		t.Fatalf("raised while scaling in: %v", w.CapacityRaises())
	}
}

// TestTwoGatewaysNeverBothAct: two gateways share Redis and one scale
// set; both decide at the same moments; only the leader acts, so the
// capacity is raised once.
func TestTwoGatewaysNeverBothAct(t *testing.T) {
	srv := redistest.Start(t)
	w := azuretest.New()
	w.Add(vm(0))
	w.SetCapacity(1)
	var fs []*fixture
	var leaders []Leader
	for _, name := range []string{"gw-a", "gw-b"} {
		f := newFixture(t, w, fixtureOpts{withPool: true})
		f.poll()
		if _, err := f.bal.Acquire("alice", balancer.SSH, "c"); err != nil {
			t.Fatal(err)
		}
		st, err := redisstate.New(redisstate.Config{Redis: srv.URL(), Replica: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fs = append(fs, f)
		leaders = append(leaders, st.Leader("capacity", time.Minute))
	}
	cfg := capacity.Config{WarmSpares: 1, MaxInstances: 5, Cooldown: time.Minute}.WithDefaults()
	for range 3 {
		var wg sync.WaitGroup
		for i, f := range fs {
			wg.Go(func() { f.src.capacityOnce(context.Background(), cfg, CapacityOptions{Leader: leaders[i]}) })
		}
		wg.Wait()
		for _, f := range fs {
			f.clock.Add(2 * time.Minute)
		}
	}
	if got := w.CapacityRaises(); len(got) != 1 {
		t.Fatalf("capacity raises %v: want one, by the leader alone", got)
	}
	a, b := fs[0].src.CapacityStatus(), fs[1].src.CapacityStatus()
	if a.Leading == b.Leading {
		t.Fatalf("leading: gw-a %v, gw-b %v; want exactly one", a.Leading, b.Leading)
	}
}
