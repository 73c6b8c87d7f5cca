package balancer

import (
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// cpu is a Load with only the CPU figure, taken at at.
func cpu(v float64, at time.Time) Load {
	l := NoLoad
	l.CPU, l.At = v, at
	return l
}

func loadCfg() Config {
	return Config{Load: LoadConfig{Max: 0.9, StaleAfter: 15 * time.Second}}
}

// placed acquires a session for each user and counts where they landed.
func placed(t *testing.T, b *Balancer, users ...string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, u := range users {
		got[acquire(t, b, u).Node().Name]++
	}
	return got
}

func TestLoadRules(t *testing.T) {
	for _, tt := range []struct {
		name  string
		loads map[string]Load // by node, taken at the clock's time
		age   time.Duration   // the clock moves on this much before the users come
		users int
		want  map[string]int
	}{
		{
			name:  "a saturated node takes no new users while others have room; the rest share evenly",
			loads: map[string]Load{"n1": cpu(15.9/4, time.Time{}), "n2": cpu(0.01, time.Time{}), "n3": cpu(0.01, time.Time{})},
			users: 6, want: map[string]int{"n2": 3, "n3": 3},
		},
		{
			name:  "memory counts like CPU",
			loads: map[string]Load{"n1": {CPU: 0.1, Memory: 0.95, GPU: Unknown, GPUMemory: Unknown}, "n2": cpu(0.1, time.Time{}), "n3": cpu(0.1, time.Time{})},
			users: 4, want: map[string]int{"n2": 2, "n3": 2},
		},
		{
			name:  "a full GPU is skipped",
			loads: map[string]Load{"n1": {CPU: 0.05, Memory: 0.2, GPU: 1, GPUMemory: 0.3}, "n2": cpu(0.5, time.Time{}), "n3": cpu(0.5, time.Time{})},
			users: 2, want: map[string]int{"n2": 1, "n3": 1},
		},
		{
			name:  "headroom first: the idle node takes users until its sessions weigh like the busy node's load",
			loads: map[string]Load{"n1": cpu(0.5, time.Time{}), "n2": cpu(0, time.Time{}), "n3": cpu(0.5, time.Time{})},
			users: 5, want: map[string]int{"n2": 5},
		},
		{
			name:  "every node over max: the least loaded by the blend",
			loads: map[string]Load{"n1": cpu(2, time.Time{}), "n2": cpu(1.5, time.Time{}), "n3": cpu(3, time.Time{})},
			users: 3, want: map[string]int{"n2": 3},
		},
		{
			name:  "a node without figures is judged by its sessions alone, never excluded",
			loads: map[string]Load{"n1": cpu(0.95, time.Time{}), "n2": cpu(0.0, time.Time{})},
			users: 4, want: map[string]int{"n2": 2, "n3": 2},
		},
		{
			name:  "stale figures are not used",
			loads: map[string]Load{"n1": cpu(5, time.Time{}), "n2": cpu(5, time.Time{}), "n3": cpu(0, time.Time{})},
			age:   16 * time.Second, users: 3, want: map[string]int{"n1": 1, "n2": 1, "n3": 1},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, c := newTest(t, loadCfg(), "n1", "n2", "n3")
			for name, l := range tt.loads {
				l.At = c.Now()
				b.SetLoad(name, l)
			}
			c.Add(tt.age)
			for name := range tt.loads { // the next scrape failed: the same figures again
				b.SetLoad(name, b.nodes[name].load)
			}
			users := make([]string, tt.users)
			for i := range users {
				users[i] = string(rune('a' + i))
			}
			got := placed(t, b, users...)
			if len(got) != len(tt.want) {
				t.Fatalf("placed %v, want %v", got, tt.want)
			}
			for n, k := range tt.want {
				if got[n] != k {
					t.Fatalf("placed %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestAffinityWinsOverLoad(t *testing.T) {
	b, c := newTest(t, loadCfg(), "n1", "n2")
	b.SetLoad("n2", cpu(0.5, c.Now()))
	l := acquire(t, b, "alice") // n1: idle
	if l.Node().Name != "n1" {
		t.Fatalf("alice on %s, want the idle n1", l.Node().Name)
	}
	b.SetLoad("n1", cpu(4, c.Now()))
	b.SetLoad("n2", cpu(0, c.Now()))
	if got := acquire(t, b, "alice").Node().Name; got != "n1" {
		t.Fatalf("alice's second session on %s: affinity must win over load", got)
	}
	if got := acquire(t, b, "bob").Node().Name; got != "n2" {
		t.Fatalf("bob on %s, want n2 (n1 is saturated)", got)
	}
}

func TestRefreshLoadDropsStaleFigures(t *testing.T) {
	b, c := newTest(t, loadCfg(), "n1", "n2")
	b.SetLoad("n1", cpu(0, c.Now()))
	b.SetLoad("n2", cpu(0.5, c.Now()))
	acquire(t, b, "a") // n1, the idle one
	// n1's exporter stops answering: no more samples. Once its figures
	// are stale it is judged by its one session, and n2's figures (still
	// fresh) make it the busier: without a refresh n1 would keep its old
	// score.
	c.Add(10 * time.Second)
	b.SetLoad("n2", cpu(0.5, c.Now()))
	c.Add(10 * time.Second)
	b.SetLoad("n2", cpu(0.05, c.Now()))
	b.RefreshLoad()
	if got := acquire(t, b, "b").Node().Name; got != "n2" {
		t.Fatalf("b on %s, want n2 (0.05 + 0) over n1 (stale figures, one session: 0.1)", got)
	}
}

func TestLoadMaxZeroTurnsExclusionOff(t *testing.T) {
	cfg := loadCfg()
	cfg.Load.Max = 0
	b, c := newTest(t, cfg, "n1", "n2")
	b.SetLoad("n1", cpu(1.2, c.Now()))
	b.SetLoad("n2", cpu(1.5, c.Now()))
	// No exclusion: the blend alone. n1 takes users until its sessions
	// outweigh the 0.3 of load between them (three sessions at 0.1).
	got := placed(t, b, "a", "b", "c", "d", "e")
	if got["n1"] != 4 || got["n2"] != 1 {
		t.Fatalf("placed %v, want n1:4 n2:1", got)
	}
}

func TestLoadSnapshotAndHistory(t *testing.T) {
	b, c := newTest(t, loadCfg(), "n1", "n2")
	for i := range 3 {
		b.SetLoad("n1", Load{CPU: float64(i), Memory: 0.5, GPU: Unknown, GPUMemory: Unknown, At: c.Now()})
		c.Add(5 * time.Second)
	}
	st := b.Nodes()
	if st[0].Load.CPU != 2 || st[0].Load.Memory != 0.5 || !math.IsNaN(st[0].Load.GPU) || st[0].LoadStale {
		t.Fatalf("n1 load %+v stale %v", st[0].Load, st[0].LoadStale)
	}
	if st[1].Load.Measured() || st[1].LoadStale {
		t.Fatalf("n2 was never measured: %+v stale %v", st[1].Load, st[1].LoadStale)
	}
	c.Add(20 * time.Second)
	if st := b.Nodes(); !st[0].LoadStale {
		t.Fatal("n1's figures are 25 s old: want stale")
	}
	h := b.LoadHistory("n1")
	if len(h) != 3 || h[0].CPU != 0 || h[2].CPU != 2 {
		t.Fatalf("history %+v", h)
	}
	for i := range loadHistory + 5 {
		c.Add(time.Second)
		b.SetLoad("n2", cpu(float64(i), c.Now()))
	}
	h = b.LoadHistory("n2")
	if len(h) != loadHistory || h[0].CPU != 5 || h[len(h)-1].CPU != loadHistory+4 {
		t.Fatalf("full ring: %d samples, first %v last %v", len(h), h[0].CPU, h[len(h)-1].CPU)
	}
	if b.LoadHistory("nope") != nil {
		t.Fatal("history of an unknown node")
	}
}

func TestLoadPeak(t *testing.T) {
	if p := NoLoad.Peak(); !math.IsNaN(p) {
		t.Fatalf("peak of nothing: %v", p)
	}
	if p := (Load{CPU: 0.2, Memory: Unknown, GPU: 0.7, GPUMemory: 0.1}).Peak(); p != 0.7 {
		t.Fatalf("peak %v, want 0.7", p)
	}
	if (Load{CPU: 0.2, Memory: Unknown, GPU: Unknown, GPUMemory: Unknown}).Measured() {
		t.Fatal("figures without a time count as measured")
	}
}

func TestLoadErrorShownAndCleared(t *testing.T) {
	b, c := newTest(t, loadCfg(), "n1", "n2")
	b.SetLoad("n1", cpu(0.5, c.Now()))
	c.Add(5 * time.Second)
	b.SetLoadError("n1", "node_exporter: GET /metrics: 302 Found: redirect to \"http://elsewhere/\" not followed")
	b.SetLoadError("nope", "ignored")
	st := b.Nodes()
	if st[0].LoadError != `node_exporter: GET /metrics: 302 Found: redirect to "http://elsewhere/" not followed` || !st[0].LoadErrorAt.Equal(c.Now()) {
		t.Fatalf("n1's load error %q at %v, want the redirect at %v", st[0].LoadError, st[0].LoadErrorAt, c.Now())
	}
	if st[0].Load.CPU != 0.5 {
		t.Fatalf("an error dropped n1's last figures: %+v", st[0].Load)
	}
	if st[1].LoadError != "" || !st[1].LoadErrorAt.IsZero() {
		t.Fatalf("n2 has a load error %q at %v", st[1].LoadError, st[1].LoadErrorAt)
	}
	c.Add(5 * time.Second)
	b.SetLoadError("n1", "")
	if st := b.Nodes(); st[0].LoadError != "" || !st[0].LoadErrorAt.IsZero() {
		t.Fatalf("a good scrape left n1's error %q at %v", st[0].LoadError, st[0].LoadErrorAt)
	}
}

func TestLoadErrorTextIsBoundedAndPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"connection refused", "connection refused"},
		{"bad \x1b[31mred\tline\n", `bad \x1b[31mred\tline\n`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`},
		{"not utf-8 \xff\xfe", `not utf-8 \xff\xfe`},
		{"ünïcödé ok", "ünïcödé ok"},
	} {
		if got := loadErrorText(tc.in); got != tc.want {
			t.Errorf("loadErrorText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := loadErrorText(strings.Repeat("é", 1000))
	if len(long) > maxLoadError+len("…") || !strings.HasSuffix(long, "…") || !utf8.ValidString(long) {
		t.Fatalf("a long error is kept as %d bytes (%q…)", len(long), long[:20])
	}
	if got := loadErrorText(strings.Repeat("\x00", 1000)); len(got) > maxLoadError+len("…") {
		t.Fatalf("escaped controls are kept as %d bytes", len(got))
	}
}
