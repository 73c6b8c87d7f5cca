package sshgw

import (
	"testing"
	"time"
)

func TestStartLimiter(t *testing.T) {
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	l := newStartLimiter(StartLimit{Window: 10 * time.Minute, PerAddress: 1, Total: 2}, func() time.Time { return now })
	take := func(addr string) bool { _, ok := l.take(addr); return ok }
	for _, step := range []struct {
		after time.Duration
		addr  string
		want  bool
	}{
		{0, "a", true},
		{time.Minute, "a", false}, // per address
		{0, "b", true},
		{0, "c", false},              // in all
		{9 * time.Minute, "c", true}, // a's count is 10m old
		{0, "a", false},              // in all again: b and c
		{time.Minute, "a", true},     // b's has gone
	} {
		now = now.Add(step.after)
		if got := take(step.addr); got != step.want {
			t.Fatalf("at %s, take(%s) = %v, want %v", now.Format("15:04"), step.addr, got, step.want)
		}
	}
	// A count given back (no start was offered) frees its place.
	l = newStartLimiter(StartLimit{PerAddress: 1, Total: 1}, func() time.Time { return now })
	give, _ := l.take("a")
	give()
	if !take("a") {
		t.Error("a count given back still bounds the address")
	}
	if d := (StartLimit{}).withDefaults(); d.Window != 10*time.Minute || d.PerAddress != 1 || d.Total != 3 {
		t.Errorf("defaults %+v", d)
	}
}
