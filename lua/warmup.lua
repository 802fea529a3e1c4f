-- warmup.lua: load a promotion's stock and rules into Redis (idempotent).
--
-- KEYS[1..5] {promo:<id>}: meta, buyers, requests, reservations, pending
-- ARGV[1] stock   ARGV[2] per-user limit   ARGV[3] starts at ms   ARGV[4] ends at ms
-- ARGV[5] paused ("1" or "0")   ARGV[6] identity (the promotion row's creation time, µs)
--
-- The first load sets remaining = stock. Later loads refresh the rules and keep remaining:
-- reservations may already have been taken against it. Keys left by another promotion with
-- the same id (a database restored or recreated beside a Redis that kept its data) are
-- dropped first: they belong to a sale that no longer exists. Bumps the epoch (the window
-- or the pause flag may have changed, reopening the sale).
-- Returns remaining.

local loaded = redis.call('EXISTS', KEYS[1]) == 1
if loaded and redis.call('HGET', KEYS[1], 'identity') ~= ARGV[6] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
end
if redis.call('HSETNX', KEYS[1], 'remaining', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'identity', ARGV[6])
end
redis.call('HSET', KEYS[1], 'per_user_limit', ARGV[2], 'starts_at_ms', ARGV[3], 'ends_at_ms', ARGV[4],
  'paused', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return tonumber(redis.call('HGET', KEYS[1], 'remaining'))
