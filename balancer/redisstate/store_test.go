package redisstate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
	"github.com/poolgate/poolgate/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var nodeNames = []string{"node-1", "node-2", "node-3"}

// replica is one gateway's balancer sharing state through Redis.
type replica struct {
	bal    *balancer.Balancer
	store  *Store
	cancel context.CancelFunc
	done   chan struct{}
	// notices is whether the replica's pin notices arrive; subscribed
	// counts its confirmed subscriptions.
	notices    atomic.Bool
	subscribed atomic.Int32
}

func newReplica(t *testing.T, url, name string, ttl time.Duration) *replica {
	t.Helper()
	return newReplicaWith(t, url, name, ttl, "")
}

// newReplicaWith is newReplica with its own key prefix ("" for the
// default), so that tests can share one redis-server.
func newReplicaWith(t *testing.T, url, name string, ttl time.Duration, prefix string) *replica {
	t.Helper()
	store, err := New(Config{Redis: url, Replica: name, LeaseTTL: ttl, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{store: store, cancel: cancel, done: make(chan struct{})}
	bal := balancer.New(balancer.Config{AffinityGrace: 10 * time.Minute}, balancer.Options{Logger: zaptest.NewLogger(t).Named(name), Shared: observed{store, r}})
	r.bal = bal
	upPool(bal)
	go func() { defer close(r.done); bal.RunShared(ctx) }()
	t.Cleanup(r.stop)
	testutil.Eventually(t, 5*time.Second, name+"'s pin notices", r.notices.Load)
	return r
}

// observed is the replica's store, with its pin notices watched on the
// way to the balancer.
type observed struct {
	*Store
	r *replica
}

func (o observed) Watch(ctx context.Context, n balancer.PinNotices) {
	o.Store.Watch(ctx, noticeTap{n, o.r})
}

// noticeTap passes pin notices on, recording whether they arrive.
type noticeTap struct {
	balancer.PinNotices
	r *replica
}

func (t noticeTap) SetPinNotices(on bool) {
	t.PinNotices.SetPinNotices(on)
	t.r.notices.Store(on)
	if on {
		t.r.subscribed.Add(1)
	}
}

// stop ends the replica without releasing its leases, as a gateway that
// is killed would.
func (r *replica) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
	_ = r.store.Close()
}

func (r *replica) acquire(t *testing.T, user string) *balancer.Lease {
	t.Helper()
	l, err := r.bal.Acquire(user, balancer.SSH, "192.0.2.1:5000")
	if err != nil {
		t.Fatalf("Acquire(%s): %v", user, err)
	}
	return l
}

func counts(nodes []balancer.NodeStatus) string {
	var s []string
	for _, n := range nodes {
		s = append(s, fmt.Sprintf("%s=%d", n.Name, n.Sessions.Of(balancer.SSH)+n.Sessions.Of(balancer.HTTP)))
	}
	return strings.Join(s, " ")
}

func TestReplicasAgree(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)

	alice := a.acquire(t, "alice")
	again := b.acquire(t, "alice")
	if again.Node().Name != alice.Node().Name {
		t.Fatalf("alice through A on %s, through B on %s", alice.Node().Name, again.Node().Name)
	}
	// B sees A's sessions (its view is at most half a second old), with
	// A's replica name.
	testutil.Eventually(t, time.Second, "B to count alice's two sessions", func() bool {
		return strings.Contains(counts(b.bal.Nodes()), alice.Node().Name+"=2")
	})
	replicas := map[string]bool{}
	for _, s := range b.bal.Sessions() {
		replicas[s.Replica] = true
	}
	if !replicas["gw-a"] || !replicas["gw-b"] {
		t.Errorf("sessions' replicas %v, want both", replicas)
	}
	alice.Release()
	again.Release()
	// Releases reach Redis in the background; until then alice's sessions
	// still weigh on her node.
	testutil.Eventually(t, 2*time.Second, "alice's releases", func() bool { return counts(b.bal.Nodes()) == "node-1=0 node-2=0 node-3=0" })

	// Ten users log in at once through alternating replicas: the claims
	// race across replicas, and the spread is even. Each then opens a
	// second session through the other replica and finds the same node.
	// (Two racing sessions per user would balance sessions, not users.)
	var wg sync.WaitGroup
	first := make([]*balancer.Lease, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := []*replica{a, b}[i%2]
			l, err := r.bal.Acquire(fmt.Sprintf("user%d", i), balancer.SSH, "c")
			if err != nil {
				t.Error(err)
				return
			}
			first[i] = l
		}()
	}
	wg.Wait()
	perNode := map[string]int{}
	for i, l := range first {
		if l == nil {
			t.FailNow()
		}
		perNode[l.Node().Name]++
		second := []*replica{b, a}[i%2].acquire(t, fmt.Sprintf("user%d", i))
		if second.Node().Name != l.Node().Name {
			t.Errorf("user%d on %s, and through the other replica on %s", i, l.Node().Name, second.Node().Name)
		}
		second.Release()
	}
	lo, hi := 10, 0
	for _, n := range nodeNames {
		lo, hi = min(lo, perNode[n]), max(hi, perNode[n])
	}
	if hi-lo > 1 {
		_, da, _ := a.bal.SharedStatus()
		_, db, _ := b.bal.SharedStatus()
		t.Errorf("users per node %v: more than one apart (degraded: A %v, B %v)", perNode, da, db)
	}
	for _, l := range first {
		l.Release()
	}
}

func TestDrainThroughOneReplicaSteersTheOther(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)
	carol := a.acquire(t, "carol")
	defer carol.Release()
	if err := a.bal.Drain(carol.Node().Name); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		l := b.acquire(t, fmt.Sprintf("new%d", i))
		if l.Node().Name == carol.Node().Name {
			t.Fatalf("a new user through B landed on %s, drained through A", l.Node().Name)
		}
		defer l.Release()
	}
	// A user pinned to the drained node still reaches it, through B too.
	if l := b.acquire(t, "carol"); l.Node().Name != carol.Node().Name {
		t.Errorf("carol through B went to %s, want her drained node %s", l.Node().Name, carol.Node().Name)
	} else {
		l.Release()
	}
	testutil.Eventually(t, time.Second, "B to show the drain", func() bool {
		for _, n := range b.bal.Nodes() {
			if n.Name == carol.Node().Name {
				return n.State == balancer.StateDraining
			}
		}
		return false
	})
	if err := b.bal.Undrain(carol.Node().Name); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "A to show the undrain", func() bool {
		for _, n := range a.bal.Nodes() {
			if n.Name == carol.Node().Name {
				return n.State == balancer.StateUp
			}
		}
		return false
	})
}

func TestDeadReplicaLeavesCountsWithinTTL(t *testing.T) {
	srv := redistest.Start(t)
	ttl := 3 * time.Second
	a, b := newReplica(t, srv.URL(), "gw-a", ttl), newReplica(t, srv.URL(), "gw-b", ttl)
	for _, u := range []string{"u1", "u2", "u3"} {
		a.acquire(t, u) // never released: A dies with them
	}
	testutil.Eventually(t, time.Second, "B to count A's sessions", func() bool { return counts(b.bal.Nodes()) == "node-1=1 node-2=1 node-3=1" })
	a.stop()
	died := time.Now()
	testutil.Eventually(t, 2*ttl, "A's sessions to leave B's counts", func() bool { return counts(b.bal.Nodes()) == "node-1=0 node-2=0 node-3=0" })
	if took := time.Since(died); took > ttl+time.Second {
		t.Errorf("A's sessions left the counts after %s, want within the %s TTL", took, ttl)
	}
}

func TestRedisOutageDegradesAndReconciles(t *testing.T) {
	srv := redistest.Start(t)
	ttl := 3 * time.Second
	a, b := newReplica(t, srv.URL(), "gw-a", ttl), newReplica(t, srv.URL(), "gw-b", ttl)
	first := a.acquire(t, "early")
	defer first.Release()

	srv.Stop()
	var held []*balancer.Lease
	for i := 0; i < 3; i++ {
		for _, r := range []*replica{a, b} {
			start := time.Now()
			held = append(held, r.acquire(t, fmt.Sprintf("during%d-%s", i, r.store.Replica())))
			if d := time.Since(start); d > time.Second {
				t.Errorf("a login during the outage took %s", d)
			}
		}
	}
	if _, degraded, _ := a.bal.SharedStatus(); !degraded {
		t.Error("A does not report the shared state degraded")
	}
	srv.Restart() // empty, as a Redis that lost its data
	// Within a lease period both replicas put their sessions back.
	testutil.Eventually(t, 2*ttl, "counts to converge", func() bool {
		_, da, _ := a.bal.SharedStatus()
		_, db, _ := b.bal.SharedStatus()
		if da || db {
			return false
		}
		total := 0
		for _, n := range b.bal.Nodes() {
			total += n.Sessions.Of(balancer.SSH)
		}
		return total == 7
	})
	for _, l := range held {
		l.Release()
	}
	testutil.Eventually(t, 2*ttl, "releases to reach Redis", func() bool {
		total := 0
		for _, n := range a.bal.Nodes() {
			total += n.Sessions.Of(balancer.SSH)
		}
		return total == 1
	})
}

func TestPinMovesWhenNodeIsDownAndAbortForgets(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)
	l := a.acquire(t, "dave")
	home := l.Node().Name
	l.Release()
	// B's health check finds dave's node down: his next session moves,
	// and he is told once.
	b.bal.SetHealth(home, balancer.SSH, false, "down")
	b.bal.NodeFailed(home, balancer.SSH)
	moved := b.acquire(t, "dave")
	if moved.Node().Name == home || moved.Repinned() != home {
		t.Fatalf("dave through B: %s (repinned %q), want moved off %s", moved.Node().Name, moved.Repinned(), home)
	}
	// A follows once B's notice of the move reaches it (its copy of the pin table may
	// answer for the few milliseconds before); dave is told only once.
	testutil.Eventually(t, 2*time.Second, "A to follow dave's move", func() bool {
		next := a.acquire(t, "dave")
		defer next.Release()
		if next.Repinned() != "" {
			t.Errorf("dave through A was told again of the move (repinned %q)", next.Repinned())
		}
		return next.Node().Name == moved.Node().Name
	})
	moved.Release()

	// A lease whose session never started takes its fresh pin back.
	e := a.acquire(t, "erin")
	if ok, _ := a.store.rdb.HExists(context.Background(), a.store.prefix+"pins", "erin").Result(); !ok {
		t.Fatal("erin's claim left no pin")
	}
	e.Abort()
	testutil.Eventually(t, 5*time.Second, "erin's pin to go", func() bool {
		ok, err := a.store.rdb.HExists(context.Background(), a.store.prefix+"pins", "erin").Result()
		return err == nil && !ok
	})
}

// A gateway whose subscription to pin notices breaks may miss a move;
// it drops its cached pins, so the user is not sent to the old node.
func TestMissedPinNoticesDropCachedPins(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)
	first := a.acquire(t, "hana")
	home := first.Node().Name
	first.Release()
	cached := a.acquire(t, "hana") // served from A's copy of the pin table
	cached.Release()
	if cached.Node().Name != home {
		t.Fatalf("hana's second session on %s, want %s", cached.Node().Name, home)
	}

	// Redis drops every subscriber; B moves hana before A is back.
	subscribed := a.subscribed.Load()
	ctl := a.store.rdb
	if err := ctl.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	b.bal.SetHealth(home, balancer.SSH, false, "down")
	b.bal.NodeFailed(home, balancer.SSH)
	moved := b.acquire(t, "hana")
	defer moved.Release()
	if moved.Node().Name == home {
		t.Fatalf("B left hana on %s", home)
	}
	testutil.Eventually(t, 5*time.Second, "A to subscribe again", func() bool { return a.subscribed.Load() > subscribed && a.notices.Load() })
	next := a.acquire(t, "hana")
	defer next.Release()
	if next.Node().Name != moved.Node().Name {
		t.Errorf("after its subscription broke, A sent hana to %s, want %s where B moved her", next.Node().Name, moved.Node().Name)
	}
}

func TestNoNodeAndConfig(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv.URL(), "gw-a", 30*time.Second)
	for _, n := range nodeNames {
		_ = a.bal.Drain(n)
	}
	if _, err := a.bal.Acquire("frank", balancer.SSH, "c"); !errors.Is(err, balancer.ErrNoNode) {
		t.Errorf("all drained: %v, want ErrNoNode", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Redis: "http://x"}, "redis: not a Redis URL"},
		{Config{Redis: "redis://:s3cret@[::1"}, "REDACTED"},
		{Config{Redis: "redis://h:6379", LeaseTTL: time.Second}, "lease_ttl: 1s is too short"},
		{Config{Redis: "redis://h:6379", Replica: "a b"}, `replica: "a b"`},
	} {
		err := tc.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Validate(%+v) = %v, want %q and no password", tc.cfg, err, tc.want)
		}
	}
}

func TestPinCacheServesPinnedUsersAndHearsMoves(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)
	first := a.acquire(t, "gina")
	home := first.Node().Name
	// A's next pick for gina comes from its copy of the pin table; the lease still
	// reaches Redis (in the background), so B counts both.
	second := a.acquire(t, "gina")
	if second.Node().Name != home {
		t.Fatalf("gina's second session on %s, want %s", second.Node().Name, home)
	}
	testutil.Eventually(t, 2*time.Second, "B to count gina's two sessions", func() bool {
		return strings.Contains(counts(b.bal.Nodes()), home+"=2")
	})
	first.Release()
	second.Release()
	testutil.Eventually(t, 2*time.Second, "the releases", func() bool { return !strings.Contains(counts(b.bal.Nodes()), "=2") })

	// B finds gina's node down and moves her; A, which still sees the node
	// up, hears of the move and follows.
	b.bal.SetHealth(home, balancer.SSH, false, "down")
	b.bal.NodeFailed(home, balancer.SSH)
	moved := b.acquire(t, "gina")
	if moved.Node().Name == home {
		t.Fatalf("B left gina on %s", home)
	}
	testutil.Eventually(t, 2*time.Second, "A to follow the move", func() bool {
		l := a.acquire(t, "gina")
		defer l.Release()
		return l.Node().Name == moved.Node().Name
	})
	moved.Release()
}

func TestBrowserSessionsAreSharedToo(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.URL(), "gw-a", 30*time.Second), newReplica(t, srv.URL(), "gw-b", 30*time.Second)
	ssh := a.acquire(t, "ivy")
	web, err := b.bal.Acquire("ivy", balancer.HTTP, "198.51.100.7:443")
	if err != nil {
		t.Fatal(err)
	}
	if web.Node().Name != ssh.Node().Name {
		t.Fatalf("ivy's browser through B on %s, her ssh through A on %s", web.Node().Name, ssh.Node().Name)
	}
	testutil.Eventually(t, time.Second, "A to count ivy's browser session", func() bool {
		for _, n := range a.bal.Nodes() {
			if n.Name == ssh.Node().Name {
				return n.Sessions.Of(balancer.SSH) == 1 && n.Sessions.Of(balancer.HTTP) == 1
			}
		}
		return false
	})
	ssh.Release()
	web.Release()
}

func TestURLCarriesTLSAndPassword(t *testing.T) {
	s, err := New(Config{Redis: "rediss://:s3cret@pool-state.redis.cache.windows.net:6380/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := s.rdb.Options()
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "pool-state.redis.cache.windows.net" || o.Password != "s3cret" {
		t.Errorf("rediss:// URL: TLS %v, password set %v", o.TLSConfig, o.Password != "")
	}
	if s.Addr() != "pool-state.redis.cache.windows.net:6380" || strings.Contains(s.Addr(), "s3cret") {
		t.Errorf("Addr() = %q", s.Addr())
	}
	if !replicaRE.MatchString(s.Replica()) {
		t.Errorf("default replica name %q", s.Replica())
	}
}
