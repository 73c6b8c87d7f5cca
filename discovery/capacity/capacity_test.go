package capacity

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 8, 9, 0, 0, 0, time.UTC)

func busy(name string) Node { return Node{Name: name, Sessions: 2} }
func idleFor(name string, d time.Duration) Node {
	return Node{Name: name, IdleSince: t0.Add(-d)}
}

func TestDecide(t *testing.T) {
	cfg := Config{WarmSpares: 1, MinInstances: 1, MaxInstances: 4, ScaleInIdle: time.Hour}
	for _, tt := range []struct {
		name string
		cfg  Config
		st   State
		want []Action
	}{
		{"a spare is kept: none left, one starts", cfg, State{Now: t0, Nodes: []Node{busy("a"), busy("b")}},
			[]Action{{Add: 1, Reason: ReasonWarmSpares}}},
		{"a booting instance is a spare already", cfg, State{Now: t0, Nodes: []Node{busy("a")}, Starting: 1}, nil},
		{"a pinned node is no spare", cfg, State{Now: t0, Nodes: []Node{busy("a"), {Name: "b", Pinned: 1}}},
			[]Action{{Add: 1, Reason: ReasonWarmSpares}}},
		{"no room: max_instances", cfg, State{Now: t0, Nodes: []Node{busy("a"), busy("b"), busy("c"), busy("d")}}, nil},
		{"cooldown", cfg, State{Now: t0, Nodes: []Node{busy("a")}, LastScaleOut: t0.Add(-time.Minute)}, nil},
		{"saturated: one more even with a spare booting done", Config{MaxInstances: 4}, State{Now: t0, Nodes: []Node{{Name: "a", Sessions: 5, Saturated: true}}},
			[]Action{{Add: 1, Reason: ReasonSaturated}}},
		{"saturated but one is booting: wait for it", Config{MaxInstances: 4}, State{Now: t0, Nodes: []Node{{Name: "a", Sessions: 5, Saturated: true}}, Starting: 1}, nil},
		{"min_instances from zero", Config{MinInstances: 2, MaxInstances: 4}, State{Now: t0},
			[]Action{{Add: 2, Reason: ReasonMinimum}}},
		{"idle nodes go, the longest idle first, one spare kept", cfg,
			State{Now: t0, Nodes: []Node{busy("a"), idleFor("b", 2*time.Hour), idleFor("c", 3*time.Hour), idleFor("d", 90*time.Minute)}},
			[]Action{{Remove: "c", Reason: ReasonIdle}, {Remove: "b", Reason: ReasonIdle}}},
		{"not idle long enough", cfg, State{Now: t0, Nodes: []Node{busy("a"), idleFor("b", 30*time.Minute), idleFor("c", 30*time.Minute)}}, nil},
		{"never below min_instances", Config{MinInstances: 2, MaxInstances: 4, ScaleInIdle: time.Hour},
			State{Now: t0, Nodes: []Node{idleFor("a", 5*time.Hour), idleFor("b", 5*time.Hour)}}, nil},
		{"a draining node is neither spare nor removed by policy", cfg,
			State{Now: t0, Nodes: []Node{busy("a"), {Name: "b", Draining: true, IdleSince: t0.Add(-5 * time.Hour)}}},
			[]Action{{Add: 1, Reason: ReasonWarmSpares}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.cfg, tt.st); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Decide = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{WarmSpares: -1}, "warm_spares: must not be negative"},
		{Config{MinInstances: 5, MaxInstances: 2}, "min_instances: 5 is more than max_instances 2"},
		{Config{WarmSpares: 1}, "warm_spares: needs max_instances"},
		{Config{ScaleInIdle: time.Second}, "scale_in_idle: 1s is shorter than a minute"},
	} {
		if err := tt.cfg.Validate(); err == nil || !contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
	if err := (Config{WarmSpares: 1, MaxInstances: 3, ScaleInIdle: 2 * time.Hour}).Validate(); err != nil {
		t.Errorf("a good config: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
