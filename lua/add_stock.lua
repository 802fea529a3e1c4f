-- add_stock.lua: add units to a loaded promotion (operations' "add stock").
--
-- KEYS[1] {promo:<id>}:meta
-- ARGV[1] units to add (> 0)
--
-- Bumps the epoch: a sold-out sale reopens, and gateways must drop their final buyer lists.
-- Returns the new remaining, or -1 when the promotion is not loaded (the next warm-up loads
-- the database's stock, which already includes the units).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return redis.call('HINCRBY', KEYS[1], 'remaining', ARGV[1])
