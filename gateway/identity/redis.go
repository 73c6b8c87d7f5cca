package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

var errBadBinding = errors.New("identity: a binding needs a user, a SHA256: fingerprint and an end")

// RedisBindings keeps bindings in Redis, shared by the gateways of one
// pool. Each binding is one key, PREFIX+"key:"+fingerprint, holding the
// binding as JSON and expiring at Until (Redis drops it then); each user
// has a set PREFIX+"user:"+user of their fingerprints, for Revoke, whose
// members are checked against their bindings when read.
type RedisBindings struct {
	rdb    redis.UniversalClient
	prefix string
	now    func() time.Time
}

// NewRedisBindings stores bindings through rdb under prefix (e.g.
// "poolgate:identity:"); now nil is time.Now.
func NewRedisBindings(rdb redis.UniversalClient, prefix string, now func() time.Time) *RedisBindings {
	if now == nil {
		now = time.Now
	}
	return &RedisBindings{rdb: rdb, prefix: prefix, now: now}
}

func (r *RedisBindings) keyOf(fp string) string    { return r.prefix + "key:" + fp }
func (r *RedisBindings) userOf(user string) string { return r.prefix + "user:" + user }

// bindScript replaces the binding of a key: drops the key from its old
// user's set, stores the binding with its expiry, adds it to the new
// user's set, whose expiry is pushed to the latest binding's.
var bindScript = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old then
  local ok, b = pcall(cjson.decode, old)
  if ok and type(b) == 'table' and type(b.user) == 'string' then
    redis.call('SREM', ARGV[4] .. b.user, ARGV[3])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
`)

// Bind stores b, replacing any binding of the same key.
func (r *RedisBindings) Bind(ctx context.Context, b Binding) error {
	if err := checkBinding(b); err != nil {
		return err
	}
	ttl := b.Until.Sub(r.now())
	if ttl < time.Millisecond {
		return nil // already over
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if err := bindScript.Run(ctx, r.rdb, []string{r.keyOf(b.Fingerprint), r.userOf(b.User)},
		data, ttl.Milliseconds(), b.Fingerprint, r.prefix+"user:").Err(); err != nil {
		return fmt.Errorf("storing key binding in Redis: %w", err)
	}
	return nil
}

// Lookup returns the live binding of the key with fingerprint.
func (r *RedisBindings) Lookup(ctx context.Context, fingerprint string) (Binding, bool, error) {
	data, err := r.rdb.Get(ctx, r.keyOf(fingerprint)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Binding{}, false, nil
	}
	if err != nil {
		return Binding{}, false, fmt.Errorf("reading key binding from Redis: %w", err)
	}
	var b Binding
	if err := json.Unmarshal(data, &b); err != nil || b.Fingerprint != fingerprint {
		return Binding{}, false, nil // not ours to trust
	}
	if !r.now().Before(b.Until) {
		return Binding{}, false, nil
	}
	return b, true, nil
}

// List returns the live bindings.
func (r *RedisBindings) List(ctx context.Context) ([]Binding, error) {
	var out []Binding
	iter := r.rdb.Scan(ctx, 0, r.prefix+"key:*", 200).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("listing key bindings in Redis: %w", err)
	}
	now := r.now()
	for len(keys) > 0 {
		n := min(len(keys), 200)
		vals, err := r.rdb.MGet(ctx, keys[:n]...).Result()
		if err != nil {
			return nil, fmt.Errorf("listing key bindings in Redis: %w", err)
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // expired since the scan
			}
			var b Binding
			if json.Unmarshal([]byte(s), &b) == nil && now.Before(b.Until) {
				out = append(out, b)
			}
		}
		keys = keys[n:]
	}
	sortBindings(out)
	return out, nil
}

// revokeScript deletes the bindings in a user's set that are still the
// user's, and the set; it returns how many it deleted.
var revokeScript = redis.NewScript(`
local n = 0
for _, fp in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. fp
  local v = redis.call('GET', k)
  if v then
    local ok, b = pcall(cjson.decode, v)
    if ok and type(b) == 'table' and b.user == ARGV[2] then
      redis.call('DEL', k)
      n = n + 1
    end
  end
end
redis.call('DEL', KEYS[1])
return n
`)

// Revoke removes every binding of user.
func (r *RedisBindings) Revoke(ctx context.Context, user string) (int, error) {
	n, err := revokeScript.Run(ctx, r.rdb, []string{r.userOf(user)}, r.prefix+"key:", user).Int()
	if err != nil {
		return 0, fmt.Errorf("revoking key bindings in Redis: %w", err)
	}
	return n, nil
}

// forgetScript deletes one binding if it is the user's.
var forgetScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local ok, b = pcall(cjson.decode, v)
  if ok and type(b) == 'table' and b.user == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
`)

// Forget removes the binding of fingerprint if it is user's.
func (r *RedisBindings) Forget(ctx context.Context, user, fingerprint string) error {
	if err := forgetScript.Run(ctx, r.rdb, []string{r.keyOf(fingerprint), r.userOf(user)}, user, fingerprint).Err(); err != nil {
		return fmt.Errorf("forgetting key binding in Redis: %w", err)
	}
	return nil
}
