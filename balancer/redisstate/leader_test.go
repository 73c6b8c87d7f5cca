package redisstate

import (
	"context"
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer/redisstate/redistest"
)

// TestOneLeaderAtATime: two gateways ask to lead; one does, the other
// never does at the same time; when the leader stops renewing, the other
// takes over with a higher fencing token.
func TestOneLeaderAtATime(t *testing.T) {
	srv := redistest.Start(t)
	a, err := New(Config{Redis: srv.URL(), Replica: "gw-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{Redis: srv.URL(), Replica: "gw-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	la, lb := a.Leader("capacity", 2*time.Second), b.Leader("capacity", 2*time.Second)
	ta, oka := la.Lead(ctx)
	_, okb := lb.Lead(ctx)
	if !oka || okb {
		t.Fatalf("a leads %v, b leads %v: want a alone", oka, okb)
	}
	for range 5 { // a renews; b never leads meanwhile
		time.Sleep(100 * time.Millisecond)
		if tok, ok := la.Lead(ctx); !ok || tok != ta {
			t.Fatalf("a's renewal: %v %d", ok, tok)
		}
		if _, ok := lb.Lead(ctx); ok {
			t.Fatal("b leads while a renews")
		}
	}
	if r, tok := la.Holder(ctx); r != "gw-a" || tok != ta {
		t.Fatalf("holder %q %d", r, tok)
	}
	deadline := time.Now().Add(10 * time.Second)
	var tb int64
	for time.Now().Before(deadline) { // a stops renewing
		if tok, ok := lb.Lead(ctx); ok {
			tb = tok
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if tb <= ta {
		t.Fatalf("b's token %d after a's lease lapsed, a's was %d", tb, ta)
	}
	if _, ok := la.Lead(ctx); ok {
		t.Fatal("a leads again while b holds the lease")
	}
}
