package redisstate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/poolgate/poolgate/internal/ratelog"
)

// SetLogger sends go-redis's own log lines (a failed dial, a broken pool
// connection during an outage) to log at Warn, instead of plain text on
// standard error in the middle of the JSON log. go-redis has one logger
// for the whole process. An outage makes it repeat itself many times a
// second, while the balancer already logs the outage once when it starts
// and once when it ends: so one line a minute at most passes, with the
// count of those held back.
func SetLogger(log *zap.Logger) {
	redis.SetLogger(&zapLogging{log: log, limit: ratelog.Limiter{Every: clientLogEvery}})
}

// clientLogEvery is how often go-redis's lines may reach the log.
const clientLogEvery = time.Minute

type zapLogging struct {
	log   *zap.Logger
	limit ratelog.Limiter
}

func (z *zapLogging) Printf(_ context.Context, format string, v ...any) {
	held, ok := z.limit.Allow()
	if !ok {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	if held > 0 {
		z.log.Warn(msg, zap.Int("similar_lines_held_back", held))
		return
	}
	z.log.Warn(msg)
}
