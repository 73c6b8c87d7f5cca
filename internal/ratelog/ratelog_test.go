package ratelog

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	l := &Limiter{Every: time.Second, Now: func() time.Time { return now }}
	passed := 0
	for range 10 {
		if held, ok := l.Allow(); ok {
			passed++
			if held != 0 {
				t.Fatalf("first line held %d", held)
			}
		}
		now = now.Add(50 * time.Millisecond)
	}
	if passed != 1 {
		t.Fatalf("%d of 10 lines in 0.5 s passed, want 1", passed)
	}
	now = now.Add(time.Second)
	if held, ok := l.Allow(); !ok || held != 9 {
		t.Fatalf("a second later: ok %v held %d, want true and 9", ok, held)
	}
	if _, ok := (&Limiter{}).Allow(); !ok {
		t.Fatal("the zero Limiter held a line back")
	}
}
