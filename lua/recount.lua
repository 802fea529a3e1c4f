-- recount.lua: repair a promotion's counters from its reservations (reconciliation).
--
-- KEYS[1] {promo:<id>}:meta   KEYS[2] {promo:<id>}:buyers   KEYS[3] {promo:<id>}:reservations
-- ARGV[1] stock (as configured in the database)
-- ARGV[2], ARGV[3], … pairs of order id and reservation payload to restore (orders the
--         database holds that Redis lost); existing entries are kept as they are
--
-- Rebuilds buyers from the reservations and sets remaining = stock - reserved units, all
-- in one step so no reserve runs against half-repaired counters. Bumps the epoch.
-- Returns {remaining, restored}.

local restored = 0
for i = 2, #ARGV, 2 do
  restored = restored + redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('DEL', KEYS[2])
local reserved = 0
local all = redis.call('HVALS', KEYS[3])
for _, payload in ipairs(all) do
  local user, quantity = string.match(payload, '^(%d+)|(%d+)|')
  if user then
    reserved = reserved + tonumber(quantity)
    redis.call('HINCRBY', KEYS[2], user, quantity)
  end
end
local remaining = tonumber(ARGV[1]) - reserved
redis.call('HSET', KEYS[1], 'remaining', remaining, 'stock', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return {remaining, restored}
