package redisstate

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Leader elects one gateway among those sharing the state for a job that
// only one may do at a time (the capacity controller): a lease in Redis
// that its holder renews, with a fencing token that rises with each new
// holder. A holder that stops renewing loses the lease after ttl.
type Leader struct {
	s    *Store
	key  string
	ttl  time.Duration
	mu   sync.Mutex
	tok  int64
	held bool
}

// Leader returns the election named name, with a lease of ttl.
func (s *Store) Leader(name string, ttl time.Duration) *Leader {
	return &Leader{s: s, key: s.prefix + "leader:" + name, ttl: ttl}
}

// renew extends the lease if it holds value, in one step.
var renew = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// Lead takes the lease if it is free, or renews it if this gateway holds
// it, and reports whether this gateway leads, with its fencing token. An
// unreachable Redis leads no one.
func (l *Leader) Lead(ctx context.Context) (token int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rdb := l.s.rdb
	if l.held {
		n, err := renew.Run(ctx, rdb, []string{l.key}, l.value(l.tok), l.ttl.Milliseconds()).Int()
		if err == nil && n == 1 {
			return l.tok, true
		}
		l.held = false
		if err != nil {
			return 0, false
		}
	}
	tok, err := rdb.Incr(ctx, l.key+":token").Result()
	if err != nil {
		return 0, false
	}
	got, err := rdb.SetNX(ctx, l.key, l.value(tok), l.ttl).Result()
	if err != nil || !got {
		return 0, false
	}
	l.tok, l.held = tok, true
	return tok, true
}

// Holder names the replica that holds the lease and its token, "" when
// none does.
func (l *Leader) Holder(ctx context.Context) (replica string, token int64) {
	v, err := l.s.rdb.Get(ctx, l.key).Result()
	if err != nil {
		return "", 0
	}
	r, t, _ := strings.Cut(v, " ")
	n, _ := strconv.ParseInt(t, 10, 64)
	return r, n
}

func (l *Leader) value(tok int64) string { return l.s.replica + " " + strconv.FormatInt(tok, 10) }
