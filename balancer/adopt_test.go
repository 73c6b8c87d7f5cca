package balancer

import (
	"errors"
	"testing"
	"time"
)

// Sessions and pins adopted from the gateway this one took over from in
// an upgrade count as this gateway's own.
func TestAdopt(t *testing.T) {
	b, c := newTest(t, Config{AffinityGrace: 10 * time.Minute}, "n1", "n2")
	started := c.Now().Add(-time.Hour)
	l, err := b.Adopt("alice", "n1", SSH, "192.0.2.7:4000", started, ByUser)
	if err != nil {
		t.Fatal(err)
	}
	ss := b.Sessions()
	if len(ss) != 1 || ss[0].User != "alice" || ss[0].Node != "n1" || ss[0].Client != "192.0.2.7:4000" || !ss[0].Started.Equal(started) {
		t.Fatalf("Sessions = %+v", ss)
	}
	if got := b.Nodes()[0].Sessions.Total(); got != 1 {
		t.Errorf("n1 sessions = %d, want 1", got)
	}
	// The adopted session counts for placement: bob goes to n2.
	if n := acquire(t, b, "bob"); n.Node().Name != "n2" {
		t.Errorf("bob went to %s, want n2 (n1 carries alice's adopted session)", n.Node().Name)
	}
	// alice's next session follows her adopted pin.
	if n := acquire(t, b, "alice"); n.Node().Name != "n1" {
		t.Errorf("alice went to %s, want n1", n.Node().Name)
	}
	if p := b.Pins()[0]; p.User != "alice" || p.By != ByUser || p.Sessions != 2 {
		t.Errorf("alice's pin = %+v", p)
	}
	l.Release()
	l.Release()
	if got := b.Nodes()[0].Sessions.Total(); got != 1 {
		t.Errorf("n1 sessions after release = %d, want 1", got)
	}

	// Adopted on a draining node: no rule applies, the session exists.
	if err := b.Drain("n2"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Adopt("carol", "n2", HTTP, "", started, ByBalancer); err != nil {
		t.Errorf("Adopt on a draining node: %v", err)
	}
	if _, err := b.Adopt("dave", "gone", SSH, "", started, ByBalancer); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("Adopt on an unknown node: %v, want ErrUnknownNode", err)
	}
	if _, err := b.Adopt("dave", "n1", Protocol("gopher"), "", started, ByBalancer); err == nil {
		t.Error("Adopt of an unknown protocol: no error")
	}
}

func TestAdoptPin(t *testing.T) {
	b, c := newTest(t, Config{AffinityGrace: 10 * time.Minute}, "n1", "n2")
	if err := b.AdoptPin("alice", "n2", ByOps, c.Now().Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := b.AdoptPin("bob", "n2", ByBalancer, time.Time{}); err != nil { // had sessions: a grace from now
		t.Fatal(err)
	}
	if err := b.AdoptPin("old", "n2", ByBalancer, c.Now().Add(-time.Second)); err != nil { // expired: nothing
		t.Fatal(err)
	}
	if err := b.AdoptPin("eve", "gone", ByBalancer, time.Time{}); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("AdoptPin on an unknown node: %v", err)
	}
	pins := b.Pins()
	if len(pins) != 2 || pins[0].User != "alice" || pins[0].Node != "n2" || pins[0].By != ByOps || pins[1].User != "bob" {
		t.Fatalf("Pins = %+v", pins)
	}
	if !pins[1].Until.Equal(c.Now().Add(10 * time.Minute)) {
		t.Errorf("bob's pin until %v, want a grace from now", pins[1].Until)
	}
	// A pin that holds is kept.
	if err := b.AdoptPin("alice", "n1", ByBalancer, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n := acquire(t, b, "alice"); n.Node().Name != "n2" {
		t.Errorf("alice went to %s, want n2", n.Node().Name)
	}
	c.Add(6 * time.Minute)
	if _, err := b.Adopt("alice", "n1", SSH, "", c.Now(), ByBalancer); err != nil {
		t.Fatal(err)
	}
	if p := b.Pins()[0]; p.Node != "n2" {
		t.Errorf("alice's pin moved to %s by Adopt while it held", p.Node)
	}
}
