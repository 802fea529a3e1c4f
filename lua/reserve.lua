-- reserve.lua: reserve stock of one flash-sale promotion for one buyer, atomically.
--
-- KEYS[1] {promo:<id>}:meta          hash: remaining, stock, per_user_limit, starts_at_ms, ends_at_ms,
--                                     paused, epoch (see snapshot.lua), identity, fenced (see
--                                     confirm.lua)
-- KEYS[2] {promo:<id>}:buyers        hash: user id -> units held by live reservations
-- KEYS[3] {promo:<id>}:requests      hash: "<user id>:<request id>" -> order id (kept for good)
-- KEYS[4] {promo:<id>}:reservations  hash: order id -> "<user id>|<quantity>|<reserved at ms>|<request id>"
-- KEYS[5] {promo:<id>}:pending       zset: order id scored by reserved-at ms, until persisted
-- ARGV[1] user id   ARGV[2] request id   ARGV[3] quantity   ARGV[4] order id to use if reserved
--
-- Returns {code, order id or "", remaining, payload, pending}:
--    1 reserved        2 duplicate request: the first attempt's order id, its reservation
--                        payload ("" once released) and 1 while it waits to be persisted
--   -1 not loaded     -2 not started     -3 ended     -4 paused
--   -5 limit exceeded -6 sold out         -7 recovering: this node may have lost writes of the
--                                            sale (confirm.lua fenced it) until it is repaired
-- The request id is checked first: a retry gets its order id whatever the sale's state.
-- Ids stay strings: Lua numbers are doubles and would round 64-bit ids.
-- The window is checked against Redis' clock, the one clock all gateways share.

local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'remaining', 'per_user_limit', 'starts_at_ms', 'ends_at_ms', 'paused', 'fenced',
  'identity')
if not m[7] then
  return {-1, '', 0, '', 0}
end
local request_field = ARGV[1] .. ':' .. ARGV[2]
local existing = redis.call('HGET', KEYS[3], request_field)
if existing then
  local payload = redis.call('HGET', KEYS[4], existing) or ''
  local pending = 0
  if redis.call('ZSCORE', KEYS[5], existing) then
    pending = 1
  end
  return {2, existing, 0, payload, pending}
end
local remaining = tonumber(m[1])
if m[6] then
  return {-7, '', remaining, '', 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if m[5] == '1' then
  return {-4, '', remaining, '', 0}
end
if now < tonumber(m[3]) then
  return {-2, '', remaining, '', 0}
end
if now >= tonumber(m[4]) then
  return {-3, '', remaining, '', 0}
end
local quantity = tonumber(ARGV[3])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + quantity > tonumber(m[2]) then
  return {-5, '', remaining, '', 0}
end
if remaining < quantity then
  return {-6, '', remaining, '', 0}
end
remaining = redis.call('HINCRBY', meta, 'remaining', -quantity)
redis.call('HINCRBY', KEYS[2], ARGV[1], quantity)
redis.call('HSET', KEYS[3], request_field, ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[1] .. '|' .. ARGV[3] .. '|' .. now .. '|' .. ARGV[2])
redis.call('ZADD', KEYS[5], now, ARGV[4])
return {1, ARGV[4], remaining, '', 1}
