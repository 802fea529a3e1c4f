-- release.lua: undo one reservation exactly once (publish failure, cancellation, timeout).
--
-- KEYS[1..5] as in reserve.lua
-- KEYS[6] {promo:<id>}:released      set: order ids released, so a late copy of a published
--                                     order can be recognised and skipped
-- ARGV[1] order id
-- ARGV[2] "1": forget the request id too (the order was never accepted, a retry may reserve
--         again); "0": keep it (a retry of a cancelled order's request returns that order)
--
-- Returns {1, remaining} released, or {0, remaining} nothing to release (already released
-- or unknown).

local payload = redis.call('HGET', KEYS[4], ARGV[1])
if not payload then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')}
end
local user, quantity, _, request = string.match(payload, '^(%d+)|(%d+)|(%d+)|(.*)$')
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', quantity)
if redis.call('HINCRBY', KEYS[2], user, -tonumber(quantity)) <= 0 then
  redis.call('HDEL', KEYS[2], user)
end
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[3], user .. ':' .. request)
end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
return {1, remaining}
