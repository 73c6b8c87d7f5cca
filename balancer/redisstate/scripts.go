package redisstate

import "github.com/redis/go-redis/v9"

// The shared state lives under one prefix whose hash tag ({poolgate} by
// default) puts every key in one cluster slot, so each script is atomic
// on a clustered Redis too. Times are Unix milliseconds; a lease key is
// "<replica>/<id>".
//
//	P.."drain"            set of drained nodes
//	P.."nodes"            set of nodes ever seen
//	P.."pin:"..user       hash node, until, lost: the user's affinity
//	P.."pins:"..node      zset user → until: pins to the node
//	P.."node:"..node      zset lease → expiry: the node's live leases
//	P.."user:"..user      zset lease → expiry
//	P.."replica:"..r      zset lease → expiry: one gateway's leases
//	P.."leases"           zset lease → expiry: every lease
//	P.."lease:"..lease    hash user node proto client started replica
//	P.."idle:"..node      when the node's last lease ended
//
// Expired leases are dropped by score whenever they are counted, so the
// sessions of a gateway that died leave the counts within the lease TTL,
// and its users' pins (until = last expiry + grace) age out by the grace.

// pinScript: ARGV = P, user, now. Returns the node the user is pinned to,
// "" if none.
var pinScript = redis.NewScript(`
local pin = redis.call('HMGET', ARGV[1] .. 'pin:' .. ARGV[2], 'node', 'until')
if pin[1] and (tonumber(pin[2] or '0') or 0) > tonumber(ARGV[3]) then return pin[1] end
return ''
`)

// claimScript: ARGV = P, user, proto, client, lease, replica, now, grace,
// ttl, max sessions per node, rand in [0,1), nodes as JSON
// [[name, weight, up, avoid, load], ...], session cost. A node's score is
// its load (the measured part, from the claiming gateway's scrapes) plus
// the session cost per live session per weight, as in the balancer; the
// lowest score wins. ARGV[14], if not empty, names the node the session
// must go to (AcquireOn): it is taken there, moving the pin, unless it is
// draining or full and the user is not pinned to it; ARGV[15] says who
// named it ("user", or "balancer" for a node a gateway peeked), and is kept
// in the pin as "by". Returns {node, lost, created, refused, by}; node ""
// when no node can take the session, refused then "draining", "full" or
// "down" for a named node. A claim that creates or moves a pin
// publishes "<replica> <user>" on P.."pins", so that other gateways drop
// the user from their pin caches.
var claimScript = redis.NewScript(`
local P, user, proto, client, lk, replica = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, grace, ttl, maxn, rnd = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local nodes = cjson.decode(ARGV[12])
local cost = tonumber(ARGV[13])
local pinKey = P .. 'pin:' .. user
local pin = redis.call('HMGET', pinKey, 'node', 'until', 'lost', 'by')
local pinned = pin[1] or ''
local untilv = tonumber(pin[2] or '0') or 0
local lost = pin[3] or ''
local valid = pinned ~= '' and untilv > now
local by = pin[4] or 'balancer'
local namedBy = ARGV[15] or ''
if namedBy == '' then namedBy = 'balancer' end
local byName = {}
for _, n in ipairs(nodes) do byName[n[1]] = n end
local chosen, created = nil, false
local named = ARGV[14] or ''
if named ~= '' then
  local n = byName[named]
  if not n or n[3] ~= 1 then return {'', '', 0, 'down', ''} end
  if not (valid and pinned == named) then
    if redis.call('SISMEMBER', P .. 'drain', named) == 1 then return {'', '', 0, 'draining', ''} end
    local zk = P .. 'node:' .. named
    redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
    if maxn > 0 and redis.call('ZCARD', zk) >= maxn then return {'', '', 0, 'full', ''} end
    created = true
    redis.call('PUBLISH', P .. 'pins', replica .. ' ' .. user)
    if pinned ~= '' and pinned ~= named then redis.call('ZREM', P .. 'pins:' .. pinned, user) end
  end
  chosen = named
  if created or namedBy ~= 'balancer' then by = namedBy end
elseif valid then
  local n = byName[pinned]
  if n and n[3] == 1 and n[4] == 0 then chosen = pinned end
end
if not chosen then
  local best, ties = nil, {}
  for _, n in ipairs(nodes) do
    if n[3] == 1 and n[4] == 0 and redis.call('SISMEMBER', P .. 'drain', n[1]) == 0 then
      local zk = P .. 'node:' .. n[1]
      redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
      local c = redis.call('ZCARD', zk)
      if maxn == 0 or c < maxn then
        local w = n[2]
        if w <= 0 then w = 1 end
        local load = (n[5] or 0) + c / w * cost
        if best == nil or load < best then
          best, ties = load, {n[1]}
        elseif load == best then
          ties[#ties + 1] = n[1]
        end
      end
    end
  end
  if #ties == 0 then return {'', '', 0, '', ''} end
  chosen = ties[math.floor(rnd * #ties) + 1]
  created = true
  by = 'balancer'
  redis.call('PUBLISH', P .. 'pins', replica .. ' ' .. user)
  if valid and pinned ~= chosen and lost == '' then lost = pinned end
  if pinned ~= '' and pinned ~= chosen then redis.call('ZREM', P .. 'pins:' .. pinned, user) end
end
local exp = now + ttl
redis.call('ZADD', P .. 'node:' .. chosen, exp, lk)
redis.call('ZADD', P .. 'user:' .. user, exp, lk)
redis.call('ZADD', P .. 'replica:' .. replica, exp, lk)
redis.call('ZADD', P .. 'leases', exp, lk)
redis.call('HSET', P .. 'lease:' .. lk, 'user', user, 'node', chosen, 'proto', proto, 'client', client, 'started', now, 'replica', replica)
redis.call('PEXPIREAT', P .. 'lease:' .. lk, exp)
redis.call('DEL', P .. 'idle:' .. chosen)
redis.call('SADD', P .. 'nodes', chosen)
local nu = exp + grace
if not created and untilv > nu then nu = untilv end
local keep = lost
if proto == 'ssh' then keep = '' end
redis.call('HSET', pinKey, 'node', chosen, 'until', nu, 'lost', keep, 'by', by)
redis.call('PEXPIREAT', pinKey, nu)
redis.call('ZADD', P .. 'pins:' .. chosen, nu, user)
local c = 0
if created then c = 1 end
return {chosen, lost, c, '', by}
`)

// releaseScript: ARGV = P, lease, user, node, replica, now, grace, abort
// (1 or 0), lost. The user's last release starts the pin's grace; an
// aborted lease that created the pin takes it away again.
var releaseScript = redis.NewScript(`
local P, lk, user, node, replica = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, grace, abort, lost = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1', ARGV[9]
redis.call('ZREM', P .. 'node:' .. node, lk)
redis.call('ZREM', P .. 'user:' .. user, lk)
redis.call('ZREM', P .. 'replica:' .. replica, lk)
redis.call('ZREM', P .. 'leases', lk)
redis.call('DEL', P .. 'lease:' .. lk)
redis.call('ZREMRANGEBYSCORE', P .. 'node:' .. node, '-inf', now)
if redis.call('ZCARD', P .. 'node:' .. node) == 0 then redis.call('SET', P .. 'idle:' .. node, now) end
redis.call('ZREMRANGEBYSCORE', P .. 'user:' .. user, '-inf', now)
if redis.call('ZCARD', P .. 'user:' .. user) > 0 then return 1 end
local pinKey = P .. 'pin:' .. user
local pinned = redis.call('HGET', pinKey, 'node') or ''
if abort and pinned == node then
  redis.call('ZREM', P .. 'pins:' .. node, user)
  if lost ~= '' then
    redis.call('HSET', pinKey, 'node', '', 'until', 0, 'lost', lost)
    redis.call('PEXPIRE', pinKey, grace)
  else
    redis.call('DEL', pinKey)
  end
  return 1
end
if pinned ~= '' then
  local nu = now + grace
  redis.call('HSET', pinKey, 'until', nu)
  redis.call('PEXPIREAT', pinKey, nu)
  redis.call('ZADD', P .. 'pins:' .. pinned, nu, user)
end
return 1
`)

// heartbeatScript: ARGV = P, replica, now, ttl, grace, leases as JSON
// [[lease, user, node, proto, client, started], ...], pending claims as
// JSON [lease, ...], the highest lease ID allocated when the beat was
// taken. Refreshes (or puts back) every listed lease and its user's pin,
// and forgets the replica's leases neither listed, nor pending, nor newer
// than the beat. Returns the number of leases.
var heartbeatScript = redis.NewScript(`
local P, replica = ARGV[1], ARGV[2]
local now, ttl, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local leases = cjson.decode(ARGV[6])
local exp = now + ttl
local keep = {}
for _, lk in ipairs(cjson.decode(ARGV[7])) do keep[lk] = true end
for _, l in ipairs(leases) do
  local lk, user, node = l[1], l[2], l[3]
  keep[lk] = true
  redis.call('ZADD', P .. 'node:' .. node, exp, lk)
  redis.call('ZADD', P .. 'user:' .. user, exp, lk)
  redis.call('ZADD', P .. 'replica:' .. replica, exp, lk)
  redis.call('ZADD', P .. 'leases', exp, lk)
  redis.call('HSET', P .. 'lease:' .. lk, 'user', user, 'node', node, 'proto', l[4], 'client', l[5], 'started', l[6], 'replica', replica)
  redis.call('PEXPIREAT', P .. 'lease:' .. lk, exp)
  redis.call('DEL', P .. 'idle:' .. node)
  redis.call('SADD', P .. 'nodes', node)
  local pinKey = P .. 'pin:' .. user
  local pin = redis.call('HMGET', pinKey, 'node', 'until')
  local pn = pin[1] or ''
  local pu = tonumber(pin[2] or '0') or 0
  if pn == '' or pu <= now or pn == node then
    local nu = exp + grace
    if pn == node and pu > nu then nu = pu end
    redis.call('HSET', pinKey, 'node', node, 'until', nu)
    redis.call('PEXPIREAT', pinKey, nu)
    redis.call('ZADD', P .. 'pins:' .. node, nu, user)
    if pn ~= '' and pn ~= node then redis.call('ZREM', P .. 'pins:' .. pn, user) end
  end
end
local upTo = tonumber(ARGV[8])
for _, lk in ipairs(redis.call('ZRANGE', P .. 'replica:' .. replica, 0, -1)) do
  local id = tonumber(string.match(lk, '/(%d+)$') or '0') or 0
  if not keep[lk] and id <= upTo then
    local h = redis.call('HMGET', P .. 'lease:' .. lk, 'user', 'node')
    if h[2] then redis.call('ZREM', P .. 'node:' .. h[2], lk) end
    if h[1] then redis.call('ZREM', P .. 'user:' .. h[1], lk) end
    redis.call('ZREM', P .. 'leases', lk)
    redis.call('ZREM', P .. 'replica:' .. replica, lk)
    redis.call('DEL', P .. 'lease:' .. lk)
  end
end
return #leases
`)

// viewScript: ARGV = P, now. Returns JSON {"nodes": {name: [ssh, http,
// users, pinned, draining, idle, rdp]}, "sessions": [[lease, user, node, proto,
// client, started, replica], ...]}. cjson writes an empty list as {}.
var viewScript = redis.NewScript(`
local P, now = ARGV[1], tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', P .. 'leases', '-inf', now)
local nodes, sessions = {}, {}
local function node(name)
  local n = nodes[name]
  if not n then
    n = {ssh = 0, http = 0, rdp = 0, users = {}, pinned = 0, draining = false, idle = 0}
    nodes[name] = n
  end
  return n
end
for _, lk in ipairs(redis.call('ZRANGE', P .. 'leases', 0, -1)) do
  local h = redis.call('HMGET', P .. 'lease:' .. lk, 'user', 'node', 'proto', 'client', 'started', 'replica')
  if h[1] and h[2] then
    sessions[#sessions + 1] = {lk, h[1], h[2], h[3] or '', h[4] or '', tonumber(h[5] or '0') or 0, h[6] or ''}
    local n = node(h[2])
    if h[3] == 'http' then n.http = n.http + 1 elseif h[3] == 'rdp' then n.rdp = n.rdp + 1 else n.ssh = n.ssh + 1 end
    n.users[h[1]] = true
  end
end
for _, name in ipairs(redis.call('SMEMBERS', P .. 'drain')) do node(name).draining = true end
for _, name in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local n = node(name)
  redis.call('ZREMRANGEBYSCORE', P .. 'pins:' .. name, '-inf', now)
  n.pinned = redis.call('ZCARD', P .. 'pins:' .. name)
  n.idle = tonumber(redis.call('GET', P .. 'idle:' .. name) or '0') or 0
end
local out = {}
for name, n in pairs(nodes) do
  local us = {}
  for u in pairs(n.users) do us[#us + 1] = u end
  out[name] = {n.ssh, n.http, us, n.pinned, n.draining, n.idle, n.rdp}
end
return cjson.encode({nodes = out, sessions = sessions})
`)
