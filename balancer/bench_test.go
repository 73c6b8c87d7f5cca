package balancer

import (
	"fmt"
	"testing"
	"time"
)

// benchPool returns a balancer with 1,000 up nodes and 100,000 users, each
// holding one live lease (so every user is pinned).
func benchPool(b *testing.B) (*Balancer, []string) {
	b.Helper()
	bal := New(Config{AffinityGrace: time.Hour}, Options{})
	nodes := make([]Node, 1000)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("node-%d", i), SSH: fmt.Sprintf("10.0.%d.%d:22", i/256, i%256)}
	}
	bal.SetNodes(nodes)
	for _, n := range nodes {
		bal.SetHealth(n.Name, SSH, true, "")
	}
	users := make([]string, 100000)
	for i := range users {
		users[i] = fmt.Sprintf("user%06d", i)
		if _, err := bal.Acquire(users[i], SSH, ""); err != nil {
			b.Fatal(err)
		}
	}
	return bal, users
}

// BenchmarkPickPinned is the hot path: an existing user's next session.
func BenchmarkPickPinned(b *testing.B) {
	bal, users := benchPool(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := bal.pick(users[i%len(users)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPickPinnedParallel is the pinned path from all cores at once.
func BenchmarkPickPinnedParallel(b *testing.B) {
	bal, users := benchPool(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := bal.pick(users[i%len(users)]); err != nil {
				b.Fatal(err)
			}
			i += 7
		}
	})
}

// BenchmarkPickNew is a new user: a scan of 1,000 nodes for the least load.
func BenchmarkPickNew(b *testing.B) {
	bal, _ := benchPool(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := bal.pick("newcomer"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPickNewMeasured is a new user on a pool whose every node
// reports its load (a tenth of them over load.max): the same scan, over
// scores that blend load and sessions.
func BenchmarkPickNewMeasured(b *testing.B) {
	bal, _ := benchPool(b)
	at := time.Now()
	for i := range 1000 {
		bal.SetLoad(fmt.Sprintf("node-%d", i), Load{CPU: float64(i%100) / 100, Memory: 0.5, GPU: Unknown, GPUMemory: Unknown, At: at})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := bal.pick("newcomer"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAcquireRelease is a whole session's bookkeeping for a pinned user.
func BenchmarkAcquireRelease(b *testing.B) {
	bal, users := benchPool(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		l, err := bal.Acquire(users[i%len(users)], SSH, "")
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}
