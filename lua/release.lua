-- release.lua: undo one reservation exactly once, for an order the database holds as
-- cancelled or refunded (stock returns of the canceller, refunds, reconciliation).
--
-- KEYS[1] {promo:<id>}:meta   KEYS[2] {promo:<id>}:buyers   KEYS[3] {promo:<id>}:reservations
-- KEYS[4] {promo:<id>}:pending   KEYS[5] {promo:<id>}:released
-- ARGV[1] order id
--
-- Never called for an order that is not in the database: a reservation is a promise that
-- its order will be persisted (the sweeper republishes it until it is), so releasing one
-- early could sell its unit twice. The request id stays mapped: a retry of a cancelled
-- order's request returns that order. The order joins the released set for good (cancelled
-- and refunded are final), so a repair that read it as live before it was cancelled does not
-- give its unit back. Bumps the epoch: the sale may have reopened.
-- Returns {1, remaining} released, or {0, remaining} nothing to release (already released
-- or unknown).

redis.call('SADD', KEYS[5], ARGV[1])
local payload = redis.call('HGET', KEYS[3], ARGV[1])
if not payload then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')}
end
local user, quantity = string.match(payload, '^(%d+)|(%d+)|')
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', quantity)
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
if redis.call('HINCRBY', KEYS[2], user, -tonumber(quantity)) <= 0 then
  redis.call('HDEL', KEYS[2], user)
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return {1, remaining}
