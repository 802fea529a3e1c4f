-- confirm.lua: before orders of one sale shard are confirmed, check that this node still
-- holds the Redis history the shard was verified in, and that it holds their reservations.
-- Sent in one pipeline with `WAIT <replicas> <ms>`: the write below moves this connection's
-- replication offset past every reservation found, so the WAIT that follows proves them on
-- the replicas as well.
--
-- KEYS[1] {promo:<id>}:meta          hash: history (the replication id the shard's data was
--                                     verified under), fenced (Redis ms since when it is not)
-- KEYS[2] {promo:<id>}:reservations  hash: order id -> reservation payload
-- KEYS[3] {promo:<id>}:confirmed     set: order ids found here in the shard's verified history
-- ARGV    order ids to look for (none: only the history check, as the recovery worker asks)
--
-- Returns {code, replid, fenced since ms, found...}; found per order id, in ARGV order:
-- 0 no reservation here, 1 reserved here, 2 reserved here and found by a confirmation in the
-- shard's verified history (its unit was taken there).
--    1 this node's history is the shard's (the orders found join the confirmed set)
--    2 fenced: the node's history differs from the shard's (a promoted replica, a restart from
--      disk) or it was fenced before: no new unit is confirmed until the shard is recovered;
--      a retry of an order found with 2 may be (the recovery keeps what the node holds)
--    0 the sale is not loaded on this node (lost with all its keys, or never loaded)
-- A shard loaded before histories were recorded takes this node's history as its own.
-- The replication id comes from INFO (allowed in scripts, unlike WAIT and ROLE): once per
-- batch, not per order.

local info = redis.call('INFO', 'replication')
local replid = string.match(info, 'master_replid:(%w+)')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', KEYS[1], 'identity', 'history', 'fenced')
if not m[1] then
  return {0, replid, 0}
end
local code, since = 1, 0
if m[3] then
  code, since = 2, tonumber(m[3])
elseif not m[2] then
  redis.call('HSET', KEYS[1], 'history', replid)
elseif m[2] ~= replid then
  redis.call('HSET', KEYS[1], 'fenced', now)
  code, since = 2, now
end
redis.call('HINCRBY', KEYS[1], 'confirms', 1)
local reply = {code, replid, since}
local found = {}
for i = 1, #ARGV do
  local here = redis.call('HEXISTS', KEYS[2], ARGV[i])
  if here == 1 then
    if code == 1 then
      found[#found + 1] = ARGV[i]
      here = 2
    elseif redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 1 then
      here = 2
    end
  end
  reply[#reply + 1] = here
end
if #found > 0 then
  redis.call('SADD', KEYS[3], unpack(found))
end
return reply
