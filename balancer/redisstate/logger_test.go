package redisstate

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestRedisLogLinesGoThroughZap(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	l := zapLogging{zap.New(core).Named("redis")}
	l.Printf(context.Background(), "redis: %s failed: %v\n", "dial", "connection refused")
	e := logs.All()
	if len(e) != 1 || e[0].Message != "redis: dial failed: connection refused" || e[0].LoggerName != "redis" || e[0].Level != zap.WarnLevel {
		t.Fatalf("log entries %+v", e)
	}
}
