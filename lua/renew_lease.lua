-- renew_lease.lua: extend a gateway's worker-id lease, only while this gateway holds it.
--
-- KEYS[1] seckill:worker:<n>             string: the holder's instance token, with a TTL
-- KEYS[2] {seckill:worker:<n>}:history   string: "<replication id>|<free after ms>" (see
--                                        acquire_lease.lua)
-- ARGV[1] the caller's instance token   ARGV[2] lease length in ms
--
-- Returns {1, now_ms} renewed, or {0, now_ms} lost (expired, lost with a Redis history, and
-- maybe taken by another gateway): the caller must stop minting ids with this worker id at
-- once. now_ms is Redis' clock, which order ids are stamped with. A lease this node still
-- holds is this node's history's: the record moves to it.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], replid .. '|0')
  return {1, now}
end
return {0, now}
