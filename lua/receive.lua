-- receive.lua: a shard of a sharded sale takes in the units other shards lent it (the second
-- half of a move; see lend.lua). Idempotent: safe to repeat with any reading, old or new.
--
-- KEYS[1] {promo:<id>:<k>.<salt>}:meta of the receiving shard
-- ARGV pairs: lending shard index, that shard's `lent:<this shard>` as read there
--
-- For each lender, adds what its counter shows beyond this shard's `got:<lender>`, and
-- remembers the counter. A reading older than what was already taken in adds nothing.
-- Adding stock reopens the shard: its epoch moves.
--
-- Returns {units added, remaining}; {-1, 0} when the shard is not loaded.

local meta = KEYS[1]
local remaining = tonumber(redis.call('HGET', meta, 'remaining') or 'x')
if not remaining then
  return {-1, 0}
end
local added = 0
for i = 1, #ARGV, 2 do
  local field = 'got:' .. ARGV[i]
  local lent = tonumber(ARGV[i + 1])
  local got = tonumber(redis.call('HGET', meta, field) or '0')
  if lent > got then
    added = added + lent - got
    redis.call('HSET', meta, field, lent)
  end
end
if added > 0 then
  remaining = redis.call('HINCRBY', meta, 'remaining', added)
  redis.call('HINCRBY', meta, 'got_total', added)
  redis.call('HINCRBY', meta, 'epoch', 1)
end
return {added, remaining}
