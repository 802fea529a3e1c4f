-- renew_lease.lua: extend a gateway's worker-id lease, only while this gateway holds it.
--
-- KEYS[1] seckill:worker:<n>   string: the holder's instance token, with a TTL
-- ARGV[1] the caller's instance token   ARGV[2] lease length in ms
--
-- Returns {1, now_ms} renewed, or {0, now_ms} lost (expired, and maybe taken by another
-- gateway): the caller must stop minting ids with this worker id at once. now_ms is Redis'
-- clock, which order ids are stamped with.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, now}
end
return {0, now}
