package redisstate

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/poolgate/poolgate/balancer"
)

// setPinScript: ARGV = P, user, node ("" unpins), until, replica. An ops
// pin moves the user's pin to node, marked by "ops", ending at until or
// later if it already lasted longer; the other gateways are told.
var setPinScript = redis.NewScript(`
local P, user, node, untilv, replica = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local pinKey = P .. 'pin:' .. user
local old = redis.call('HMGET', pinKey, 'node', 'until')
if old[1] then redis.call('ZREM', P .. 'pins:' .. old[1], user) end
redis.call('PUBLISH', P .. 'pins', replica .. ' ' .. user)
if node == '' then
  redis.call('DEL', pinKey)
  return 1
end
local prev = tonumber(old[2] or '0') or 0
if old[1] == node and prev > untilv then untilv = prev end
redis.call('HSET', pinKey, 'node', node, 'until', untilv, 'lost', '', 'by', 'ops')
redis.call('PEXPIREAT', pinKey, untilv)
redis.call('ZADD', P .. 'pins:' .. node, untilv, user)
redis.call('SADD', P .. 'nodes', node)
return 1
`)

// pinsScript: ARGV = P, now. Returns JSON [[user, node, by, sessions,
// until], ...] of the live pins.
var pinsScript = redis.NewScript(`
local P, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', P .. 'pins:' .. node, '(' .. now, '+inf')) do
    local pin = redis.call('HMGET', P .. 'pin:' .. user, 'node', 'until', 'by')
    if pin[1] == node then
      local live = redis.call('ZCOUNT', P .. 'user:' .. user, '(' .. now, '+inf')
      out[#out + 1] = {user, node, pin[3] or 'balancer', live, tonumber(pin[2] or '0') or 0}
    end
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
`)

// SetPin implements balancer.Shared.
func (s *Store) SetPin(ctx context.Context, c balancer.PinChange) error {
	if err := setPinScript.Run(ctx, s.rdb, s.keys(), s.prefix, c.User, c.Node, ms(c.Until), s.replica).Err(); err != nil {
		return fmt.Errorf("redis pin: %w", err)
	}
	return nil
}

// Pins implements balancer.Shared.
func (s *Store) Pins(ctx context.Context, now time.Time) ([]balancer.PinInfo, error) {
	raw, err := pinsScript.Run(ctx, s.rdb, s.keys(), s.prefix, ms(now)).Text()
	if err != nil {
		return nil, fmt.Errorf("redis pins: %w", err)
	}
	return decodePins(raw)
}

// decodePins reads the pins script's JSON.
func decodePins(raw string) ([]balancer.PinInfo, error) {
	var rows [][]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &rows); err != nil {
		return nil, fmt.Errorf("redis pins: %w", err)
	}
	out := make([]balancer.PinInfo, 0, len(rows))
	for _, r := range rows {
		if len(r) != 5 {
			continue
		}
		var p balancer.PinInfo
		var by string
		var until int64
		_ = json.Unmarshal(r[0], &p.User)
		_ = json.Unmarshal(r[1], &p.Node)
		_ = json.Unmarshal(r[2], &by)
		_ = json.Unmarshal(r[3], &p.Sessions)
		_ = json.Unmarshal(r[4], &until)
		p.By = balancer.PinOrigin(by)
		if p.Sessions == 0 && until > 0 {
			p.Until = time.UnixMilli(until)
		}
		out = append(out, p)
	}
	return out, nil
}
