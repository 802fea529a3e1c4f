-- acquire_lease.lua: take a worker id for a gateway, if no live gateway holds it.
--
-- KEYS[1] seckill:worker:<n>   string: the holder's instance token, with a TTL
-- ARGV[1] the caller's instance token   ARGV[2] lease length in ms
--
-- Returns {1, now_ms} taken (or already the caller's), {0, now_ms} held by another gateway.
-- now_ms is Redis' clock: the previous holder's lease ran out no later than this, so ids
-- stamped from it on cannot repeat one of the previous holder's.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0, now}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, now}
