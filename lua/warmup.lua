-- warmup.lua: load a promotion's stock and rules into Redis (idempotent).
--
-- KEYS[1] {promo:<id>}:meta
-- ARGV[1] stock   ARGV[2] per-user limit   ARGV[3] starts at ms   ARGV[4] ends at ms
-- ARGV[5] paused ("1" or "0")
--
-- The first load sets remaining = stock. Later loads refresh the rules and keep remaining:
-- reservations may already have been taken against it.
-- Returns remaining.

if redis.call('HSETNX', KEYS[1], 'remaining', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'stock', ARGV[1])
end
redis.call('HSET', KEYS[1], 'per_user_limit', ARGV[2], 'starts_at_ms', ARGV[3], 'ends_at_ms', ARGV[4],
  'paused', ARGV[5])
return tonumber(redis.call('HGET', KEYS[1], 'remaining'))
