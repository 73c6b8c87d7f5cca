package balancer

import (
	"slices"
	"testing"
)

func TestPinnedLooksWithoutTaking(t *testing.T) {
	b := New(Config{}, Options{})
	b.SetNodes([]Node{{Name: "n1", SSH: "a:22", HTTP: "a:80"}, {Name: "n2", SSH: "b:22", HTTP: "b:80"}})
	for _, n := range []string{"n1", "n2"} {
		b.SetHealth(n, SSH, true, "ok")
		b.SetHealth(n, HTTP, true, "ok")
	}
	if _, ok := b.Pinned("alice", HTTP); ok {
		t.Fatal("a user never seen is pinned")
	}
	if len(b.users) != 0 {
		t.Fatalf("Pinned created user state: %v", b.users)
	}
	l, err := b.Acquire("alice", SSH, "c")
	if err != nil {
		t.Fatal(err)
	}
	n, ok := b.Pinned("alice", HTTP)
	if !ok || n.Name != l.Node().Name {
		t.Fatalf("Pinned = %v %v, want %s", n, ok, l.Node().Name)
	}
	if b.Started(HTTP) != 0 || b.Started(SSH) != 1 {
		t.Fatalf("Pinned took a lease: http %d ssh %d", b.Started(HTTP), b.Started(SSH))
	}
	b.SetHealth(n.Name, HTTP, false, "down")
	if got, ok := b.Pinned("alice", HTTP); !ok || got.Name != n.Name {
		t.Fatal("one failing hub check moved alice's browser off her node")
	}
	b.NodeFailed(n.Name, HTTP)
	if _, ok := b.Pinned("alice", HTTP); ok {
		t.Fatal("pinned to a node whose hub is gone")
	}
	if got := b.NodeNames(); !slices.Contains(got, "n1") || !slices.Contains(got, "n2") || len(got) != 2 {
		t.Fatalf("NodeNames = %v", got)
	}
	l.Release()
}
