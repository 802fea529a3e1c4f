-- set_paused.lua: pause or resume a loaded promotion.
--
-- KEYS[1] {promo:<id>}:meta
-- ARGV[1] "1" pause, "0" resume
--
-- A promotion that is not loaded is left alone (its warm-up carries the flag). Resuming
-- bumps the epoch: gateways drop the buyer lists they took while it was paused.
-- Returns 1 when the promotion is loaded, 0 otherwise.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
if ARGV[1] == '0' then
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
return 1
