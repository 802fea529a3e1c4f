-- acquire_lease.lua: take a worker id for a gateway, if no live gateway holds it.
--
-- KEYS[1] seckill:worker:<n>             string: the holder's instance token, with a TTL
-- KEYS[2] {seckill:worker:<n>}:history   string: "<replication id>|<free after ms>", no TTL
--                                        (the hash tag puts it in KEYS[1]'s slot)
-- ARGV[1] the caller's instance token   ARGV[2] lease length in ms
--
-- Returns {1, now_ms} taken (or already the caller's), {0, now_ms} held by another gateway,
-- {-1, now_ms} free here but not to be taken yet: this node's history is not the one the
-- worker id was last leased in (a promoted replica, a restart from disk), so a lease of it may
-- have been lost with the old history while its holder still mints; nobody takes it for one
-- lease length from the moment that was first seen (by then the holder, whose renewals find
-- nothing, has stopped). A lease first taken after the newest write a restarted node kept
-- leaves no record there: its holder stops at its next renewal (a third of the lease).
-- now_ms is Redis' clock: the previous holder's lease ran out no later than this, so ids
-- stamped from it on cannot repeat one of the previous holder's.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0, now}
end
if not holder then
  local seen = redis.call('GET', KEYS[2])
  if seen then
    local history, free_after = string.match(seen, '^(%w+)|(%d+)$')
    if history ~= replid then
      redis.call('SET', KEYS[2], replid .. '|' .. (now + tonumber(ARGV[2])))
      return {-1, now}
    end
    if now < tonumber(free_after) then
      return {-1, now}
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], replid .. '|0')
return {1, now}
