-- pace.lua: one token bucket shared by every order writer of a deployment (GCRA on Redis'
-- clock), so K writers together never insert more than the configured rows/s.
--
-- KEYS[1] seckill:pace:<topic>              string: the theoretical arrival time, µs on Redis' clock
-- KEYS[2] {seckill:pace:<topic>}:history    string: the replication id the bucket was last
--                                           spent in (no TTL; the hash tag puts it in KEYS[1]'s slot)
-- ARGV[1] rows per second (> 0)    ARGV[2] burst, in rows (>= ARGV[3])
-- ARGV[3] rows wanted now (> 0)
--
-- Returns 0 when the rows were granted (and spent), otherwise how many µs to wait before
-- asking again. In any window of one second at most rate + burst rows are granted.
-- A bucket last spent in another Redis history (a promoted replica may lack the last grants;
-- so may a node restarted from disk) restarts empty rather than full: tokens granted before
-- a failover are not granted twice.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
local history = redis.call('GET', KEYS[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if history and history ~= replid then
  -- Empty: the next grant waits as if the whole burst had just been spent.
  tat = math.max(tat, now + tolerance)
end
if history ~= replid then
  redis.call('SET', KEYS[2], replid)
end
if tat < now then
  tat = now
end
local next_tat = tat + interval * tonumber(ARGV[3])
local allowed_at = next_tat - tolerance
if allowed_at > now then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  return math.ceil(allowed_at - now)
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return 0
