package redisstate

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/poolgate/poolgate/internal/ratelog"
)

func TestRedisLogLinesGoThroughZap(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	l := &zapLogging{log: zap.New(core).Named("redis"), limit: ratelog.Limiter{Every: clientLogEvery}}
	l.Printf(context.Background(), "redis: %s failed: %v\n", "dial", "connection refused")
	e := logs.All()
	if len(e) != 1 || e[0].Message != "redis: dial failed: connection refused" || e[0].LoggerName != "redis" || e[0].Level != zap.WarnLevel {
		t.Fatalf("log entries %+v", e)
	}
}

// An outage makes go-redis repeat itself (33 lines in 21 s were seen):
// one line a minute reaches the log, with the count held back.
func TestRedisLogLinesAreRateLimited(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	l := &zapLogging{log: zap.New(core), limit: ratelog.Limiter{Every: clientLogEvery, Now: func() time.Time { return now }}}
	for range 33 {
		l.Printf(context.Background(), "redis: connection pool: failed to dial after 5 attempts")
		now = now.Add(640 * time.Millisecond)
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines in 21 s, want 1", n)
	}
	now = now.Add(time.Minute)
	l.Printf(context.Background(), "redis: connection pool: failed to dial after 5 attempts")
	e := logs.All()
	if len(e) != 2 || e[1].ContextMap()["similar_lines_held_back"] != int64(32) {
		t.Fatalf("after a minute: %+v", e)
	}
}
