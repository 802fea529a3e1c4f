-- lend.lua: one shard of a sharded sale gives part of its remaining stock to another shard
-- whose buyers found it empty (the first half of a move; receive.lua is the second).
--
-- KEYS[1] {promo:<id>:<k>.<salt>}:meta of the lending shard
-- ARGV[1] the receiving shard's index   ARGV[2] units the receiver needs now
--
-- Gives max(needed, half of remaining rounded up), at most what remains, so one move feeds
-- the next buyers too. Moved units are counted for good in `lent:<receiver>` and
-- `lent_total`: the receiver adds what its `got:<lender>` has not seen yet, any number of
-- times (a lost reply, a crash between the halves, a settle pass), and counts it once.
-- Lending never reopens this shard, so its epoch stays. A fenced shard (its node may have lost
-- writes, see confirm.lua) lends nothing: its remaining count may hold units already sold.
--
-- Returns {given, lent:<receiver> after}; {-1, 0} when the shard is not loaded.

local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'remaining', 'fenced')
local remaining = tonumber(m[1] or 'x')
if not remaining then
  return {-1, 0}
end
local field = 'lent:' .. ARGV[1]
if m[2] then
  return {0, tonumber(redis.call('HGET', meta, field) or '0')}
end
local give = math.max(tonumber(ARGV[2]), math.ceil(remaining / 2))
if give > remaining then
  give = remaining
end
if give <= 0 then
  return {0, tonumber(redis.call('HGET', meta, field) or '0')}
end
redis.call('HINCRBY', meta, 'remaining', -give)
redis.call('HINCRBY', meta, 'lent_total', give)
return {give, redis.call('HINCRBY', meta, field, give)}
