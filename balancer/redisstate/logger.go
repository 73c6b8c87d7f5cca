package redisstate

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// SetLogger sends go-redis's own log lines (a failed dial, a broken pool
// connection during an outage) to log at Warn, instead of plain text on
// standard error in the middle of the JSON log. go-redis has one logger
// for the whole process.
func SetLogger(log *zap.Logger) { redis.SetLogger(zapLogging{log}) }

type zapLogging struct{ log *zap.Logger }

func (z zapLogging) Printf(_ context.Context, format string, v ...any) {
	z.log.Warn(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
