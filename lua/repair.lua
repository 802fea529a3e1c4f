-- repair.lua: rebuild a promotion's Redis state from the database's orders (reconcile with
-- repair), in one step so no reserve ever runs against half-repaired counters.
--
-- KEYS[1..6] {promo:<id>}: meta, buyers, requests, reservations, pending, released
-- ARGV[1..7] the promotion row as in sync_promotion.lua: stock, per-user limit, starts at ms,
--            ends at ms, paused, identity, revision
-- ARGV[8] "1" when this repair ends a fence (the recovery of a shard whose node lost writes,
--         see confirm.lua): the shard takes this node's history as its own and sells again;
--         "0" for an operator's repair, which leaves a fence in place
-- ARGV[9] F, the number of lent floors that follow, then F pairs (shard index, units): what
--         each other shard of a sharded sale took in from this one (its got:<this shard>).
--         This shard lent at least that much, even when it lost its own counters.
-- then L, the number of live orders that follow, then L pairs (order id, reservation
-- payload) of the database's live orders; then Q and Q pairs of orders accepted but not yet
-- in the database (the recovery reads them from the broker); then pairs of the database's
-- cancelled and refunded orders; a payload is "<user>|<quantity>|<ms>|<request id>"
--
-- Live orders get their reservation back unless release.lua released them meanwhile (the
-- released set: the database cancelled them after the caller read it); dead orders lose
-- theirs. Orders on their way to the database get their reservation back and wait in the
-- pending set again, as when they were accepted. All get their request id mapped again, so
-- a retry returns the original order.
-- Reservations the database does not hold yet (in flight) are kept. Buyers and remaining are
-- then recounted: remaining = stock - reserved units, where a shard of a sharded sale counts
-- as stock its share plus the units it took in less those it lent (receive.lua, lend.lua:
-- moves survive a repair). When Redis already reflects a newer
-- revision of the row (stock added meanwhile), its stock and rules win over the caller's.
-- Loads the sale when Redis lost it: the one path that may load a started sale.
--
-- Returns {remaining, restored, released, requests restored, request conflicts}: a conflict
-- is a request id Redis maps to another order than the database's. Remaining is negative
-- when the stock is below the units live orders hold (reconcile reports it).

local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'stock', 'revision', 'identity', 'got_total', 'lent_total')
if m[3] and m[3] ~= ARGV[6] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  m = {false, false, false, false, false}
end
if not m[3] then
  -- A new copy: its epoch starts at Redis' clock (µs), unlike any copy before it. Unless this
  -- is the recovery, which read the broker too, it stays fenced: orders on their way to the
  -- database are not in what the caller read.
  local t = redis.call('TIME')
  redis.call('HSET', meta, 'epoch', t[1] .. string.format('%06d', tonumber(t[2])))
  if ARGV[8] ~= '1' then
    redis.call('HSET', meta, 'fenced', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
end
local floors = tonumber(ARGV[9])
for i = 10, 9 + 2 * floors, 2 do
  local field = 'lent:' .. ARGV[i]
  local lent = tonumber(redis.call('HGET', meta, field) or '0')
  local floor = tonumber(ARGV[i + 1])
  if floor > lent then
    redis.call('HSET', meta, field, floor)
    m[5] = redis.call('HINCRBY', meta, 'lent_total', floor - lent)
  end
end
local first = 10 + 2 * floors
local stock = tonumber(ARGV[1])
local newer = m[3] and m[1] and tonumber(m[2] or '0') > tonumber(ARGV[7])
if newer then
  stock = tonumber(m[1])
else
  redis.call('HSET', meta, 'identity', ARGV[6], 'per_user_limit', ARGV[2], 'starts_at_ms', ARGV[3],
    'ends_at_ms', ARGV[4], 'paused', ARGV[5], 'revision', ARGV[7])
end

local restored, released, requests, conflicts = 0, 0, 0, 0
local function map_request(id, payload)
  local user, request = string.match(payload, '^(%d+)|%d+|%d+|(.*)$')
  local field = user .. ':' .. request
  if redis.call('HSETNX', KEYS[3], field, id) == 1 then
    requests = requests + 1
  elseif redis.call('HGET', KEYS[3], field) ~= id then
    conflicts = conflicts + 1
  end
end
local live_end = first + 1 + 2 * tonumber(ARGV[first])
local queued_end = live_end + 1 + 2 * tonumber(ARGV[live_end])
local function restore(id, payload)
  if redis.call('SISMEMBER', KEYS[6], id) == 0 then
    restored = restored + redis.call('HSETNX', KEYS[4], id, payload)
  end
end
for i = first + 1, live_end - 1, 2 do
  map_request(ARGV[i], ARGV[i + 1])
  redis.call('ZREM', KEYS[5], ARGV[i])
  restore(ARGV[i], ARGV[i + 1])
end
for i = live_end + 1, queued_end - 1, 2 do
  local id, payload = ARGV[i], ARGV[i + 1]
  map_request(id, payload)
  restore(id, payload)
  local at = string.match(payload, '^%d+|%d+|(%d+)|')
  redis.call('ZADD', KEYS[5], 'NX', at, id)
end
for i = queued_end, #ARGV, 2 do
  local id, payload = ARGV[i], ARGV[i + 1]
  map_request(id, payload)
  redis.call('ZREM', KEYS[5], id)
  redis.call('SADD', KEYS[6], id)
  released = released + redis.call('HDEL', KEYS[4], id)
end

redis.call('DEL', KEYS[2])
local reserved = 0
for _, payload in ipairs(redis.call('HVALS', KEYS[4])) do
  local user, quantity = string.match(payload, '^(%d+)|(%d+)|')
  reserved = reserved + tonumber(quantity)
  redis.call('HINCRBY', KEYS[2], user, quantity)
end
local remaining = stock + tonumber(m[4] or '0') - tonumber(m[5] or '0') - reserved
redis.call('HSET', meta, 'remaining', remaining, 'stock', stock)
redis.call('HINCRBY', meta, 'epoch', 1)
if ARGV[8] == '1' then
  local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
  redis.call('HSET', meta, 'history', replid)
  redis.call('HDEL', meta, 'fenced')
end
return {remaining, restored, released, requests, conflicts}
