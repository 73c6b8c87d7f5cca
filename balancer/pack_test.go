package balancer

import "testing"

// TestPackFillsTheBusiestNodeUnderTheTarget: with placement pack, new
// users go to the busiest node still under the target, an empty node is
// started only when none is, and the nodes it leaves empty stay empty.
func TestPackFillsTheBusiestNodeUnderTheTarget(t *testing.T) {
	b, clk := newTest(t, Config{Placement: Pack, Load: LoadConfig{SessionCost: 0.1, PackTarget: 0.3}}, "n1", "n2", "n3")
	for _, n := range []string{"n1", "n2", "n3"} {
		b.SetLoad(n, Load{CPU: 0, Memory: 0, GPU: Unknown, GPUMemory: Unknown, At: clk.Now()})
	}
	b.SetLoad("n2", Load{CPU: 0.2, Memory: 0.1, GPU: Unknown, GPUMemory: Unknown, At: clk.Now()})
	on := map[string]int{}
	for i := range 3 {
		l := acquire(t, b, "u"+string(rune('a'+i)))
		on[l.Node().Name]++
	}
	// n2's fill is the higher of its CPU (0.2) and its sessions' share
	// (0.1 each): 0.2, 0.2, 0.2, under 0.3 each time.
	if on["n2"] != 3 {
		t.Fatalf("pack placed %v, want all three on the busy n2", on)
	}
	// n2 at 0.3 is at the target: the next user starts an empty node,
	// and the one after joins that node (busiest under the target).
	started := acquire(t, b, "ud").Node().Name
	second := acquire(t, b, "ue").Node().Name
	if started == "n2" || second != started {
		t.Fatalf("past the target: %s then %s, want one new node for both", started, second)
	}
	empty := 0
	for _, st := range b.Nodes() {
		if st.Sessions.Total() == 0 {
			empty++
		}
	}
	if empty != 1 {
		t.Fatalf("%d empty nodes after 5 users, want 1 left for scale-in", empty)
	}
	// Spread, for contrast, takes the emptiest.
	b.SetConfig(Config{Load: LoadConfig{SessionCost: 0.1}})
	if n := acquire(t, b, "uf").Node().Name; n == "n2" || n == started {
		t.Fatalf("spread placed a user on %s, not the empty node", n)
	}
}

// TestPackOverTheTargetEverywhere: when every node is at the target,
// pack places like spread: the least loaded.
func TestPackOverTheTargetEverywhere(t *testing.T) {
	b, clk := newTest(t, Config{Placement: Pack, Load: LoadConfig{SessionCost: 0.1, PackTarget: 0.3}}, "n1", "n2")
	b.SetLoad("n1", Load{CPU: 0.8, Memory: Unknown, GPU: Unknown, GPUMemory: Unknown, At: clk.Now()})
	b.SetLoad("n2", Load{CPU: 0.5, Memory: Unknown, GPU: Unknown, GPUMemory: Unknown, At: clk.Now()})
	if n := acquire(t, b, "a").Node().Name; n != "n2" {
		t.Fatalf("both over the target: %s, want the less loaded n2", n)
	}
}
