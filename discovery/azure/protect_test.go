package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
	"github.com/poolgate/poolgate/internal/testutil"
)

func protecting(c *discovery.AzureConfig) { c.ProtectBusyNodes = true }

// settle runs a protection sync and waits for the updates it started.
func (f *fixture) settle() {
	f.t.Helper()
	f.src.sync()
	testutil.Eventually(f.t, 5*time.Second, "the protection updates to finish", func() bool {
		f.src.prot.mu.Lock()
		defer f.src.prot.mu.Unlock()
		return len(f.src.prot.inFlight) == 0
	})
}

func updates(w *azuretest.World) string {
	var s string
	for _, u := range w.ProtectionUpdates() {
		s += fmt.Sprintf("%s=%v ", u.ID, u.On)
		if !u.OnlyProtection {
			s += "(with more than the protection policy!) "
		}
	}
	return s
}

func TestProtectionFollowsSessionsAndGrace(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5"})
	grace := 10 * time.Minute
	f := newFixture(t, w, fixtureOpts{cfg: protecting, withPool: true, grace: grace})
	f.poll()
	f.settle()
	if got := updates(w); got != "" {
		t.Fatalf("idle pool: updates %q, want none", got)
	}

	alice, err := f.bal.Acquire("alice", balancer.SSH, "c")
	if err != nil {
		t.Fatal(err)
	}
	id := map[string]string{"n0": "0", "n1": "1"}[alice.Node().Name]
	f.settle()
	if got, want := updates(w), id+"=true "; got != want {
		t.Fatalf("first session: updates %q, want %q", got, want)
	}
	// More sessions, more listings and syncs: no more calls.
	alice2, _ := f.bal.Acquire("alice", balancer.HTTP, "c")
	for i := 0; i < 3; i++ {
		f.clock.Add(20 * time.Second)
		f.poll()
		f.settle()
	}
	if vm, _ := w.VM(id); !vm.Protected {
		t.Fatal("the instance is not protected in Azure")
	}
	if got := f.src.Protected(); !got[alice.Node().Name] || len(got) != 1 {
		t.Errorf("Protected() = %v", got)
	}

	alice.Release()
	alice2.Release()
	f.clock.Add(grace - time.Second)
	f.poll()
	f.settle()
	if got := updates(w); got != id+"=true " {
		t.Fatalf("within the grace after the last session: updates %q, want still only the first", got)
	}
	f.clock.Add(2 * time.Second)
	f.settle()
	if got, want := updates(w), id+"=true "+id+"=false "; got != want {
		t.Fatalf("after the grace: updates %q, want %q", got, want)
	}
	for i := 0; i < 3; i++ {
		f.clock.Add(time.Minute)
		f.poll()
		f.settle()
	}
	if got, want := updates(w), id+"=true "+id+"=false "; got != want {
		t.Errorf("later: updates %q, want no more than one a change", got)
	}
}

func TestProtectionRetriesWithinAzureLimits(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"})
	f := newFixture(t, w, fixtureOpts{cfg: protecting, withPool: true, grace: time.Minute})
	f.poll()
	w.Fail(azuretest.Protect, http.StatusInternalServerError, nil, 1)
	l, _ := f.bal.Acquire("alice", balancer.SSH, "c")
	defer l.Release()
	f.settle()
	if w.Calls(azuretest.Protect) != 1 || updates(w) != "" {
		t.Fatalf("calls %d, updates %q: want one failed call", w.Calls(azuretest.Protect), updates(w))
	}
	f.clock.Add(10 * time.Second)
	f.settle()
	if w.Calls(azuretest.Protect) != 1 {
		t.Fatalf("retried after 10s (%d calls); Azure allows about 4 updates a minute per VM", w.Calls(azuretest.Protect))
	}
	f.clock.Add(6 * time.Second)
	f.settle()
	if updates(w) != "0=true " {
		t.Fatalf("after the back-off: updates %q, want the retry", updates(w))
	}

	// A 429 is waited out as long as it asks.
	l.Release()
	f.clock.Add(time.Minute + time.Second)
	w.Fail(azuretest.Protect, http.StatusTooManyRequests, http.Header{"Retry-After": {"120"}}, 1)
	f.settle()
	f.clock.Add(100 * time.Second)
	f.settle()
	if n := w.Calls(azuretest.Protect); n != 3 {
		t.Fatalf("calls = %d, want 3: none within the 120s Retry-After", n)
	}
	f.clock.Add(21 * time.Second)
	f.settle()
	if got := updates(w); got != "0=true 0=false " {
		t.Errorf("after Retry-After: updates %q", got)
	}
}

func TestProtectionReconciledAfterRestart(t *testing.T) {
	// A gateway restarts: Azure holds n0 protected (its users' kernels may
	// still run) and n1 not; n2 was protected by hand and is busy.
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4", Protected: true},
		azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5"},
		azuretest.VM{ID: "2", Name: "n2", IP: "10.0.0.6", Protected: true})
	grace := 30 * time.Minute
	f := newFixture(t, w, fixtureOpts{cfg: protecting, withPool: true, grace: grace})
	f.poll()
	f.settle()
	if got := updates(w); got != "" {
		t.Fatalf("on start: updates %q, want none (Azure already holds what is wanted)", got)
	}
	if err := f.bal.Drain("n0"); err != nil { // steer bob to n2
		t.Fatal(err)
	}
	_ = f.bal.Drain("n1")
	bob, err := f.bal.Acquire("bob", balancer.SSH, "c")
	if err != nil || bob.Node().Name != "n2" {
		t.Fatalf("bob on %v (%v)", bob, err)
	}
	defer bob.Release()
	f.clock.Add(grace)
	f.poll()
	f.settle()
	if got := updates(w); got != "0=false " {
		t.Errorf("one grace after start: updates %q, want n0's protection lifted and busy n2's kept", got)
	}
}

func TestProtectionOffByDefault(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"})
	f := newFixture(t, w, fixtureOpts{withPool: true})
	f.poll()
	l, _ := f.bal.Acquire("alice", balancer.SSH, "c")
	defer l.Release()
	f.settle()
	if n := w.Calls(azuretest.Protect); n != 0 {
		t.Errorf("protect_busy_nodes is off, yet %d updates were sent", n)
	}
}

// degradedPool is a balancer whose shared state does not answer.
type degradedPool struct{ *balancer.Balancer }

func (degradedPool) SharedStatus() (bool, bool, string) { return true, true, "gw-a" }

func TestPartialViewNeverUnprotectsOrDeletes(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4", Protected: true}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5"})
	f := newFixture(t, w, fixtureOpts{cfg: protecting, withPool: true, grace: time.Minute})
	f.src.pool = degradedPool{f.bal}
	f.poll()
	l, _ := f.bal.Acquire("alice", balancer.SSH, "c") // this gateway's own session: n0 (drawn first) or n1
	f.clock.Add(2 * time.Hour)
	f.settle()
	for _, u := range w.ProtectionUpdates() {
		if !u.On {
			t.Errorf("protection of %s lifted while other gateways' sessions were unknown", u.ID)
		}
	}
	if vm, _ := w.VM("0"); !vm.Protected {
		t.Error("n0 lost its protection")
	}
	l.Release()
	if _, err := f.src.ScaleIn(context.Background(), time.Minute, 0, false); !errors.Is(err, ErrPartialView) {
		t.Errorf("ScaleIn with the shared state unreachable: %v, want ErrPartialView", err)
	}
	if len(w.Deleted()) != 0 {
		t.Error("instances deleted")
	}
}
