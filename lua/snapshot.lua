-- snapshot.lua: one gateway's view of a promotion, read atomically with Redis' clock.
--
-- KEYS[1] {promo:<id>}:meta   KEYS[2] {promo:<id>}:buyers
-- ARGV[1] the epoch of the buyer list the caller holds ("" for none)
--
-- The epoch counts every change that can reopen a sale (stock returned or added, resumed,
-- rules reloaded, recounted). A sale that is closed for new buyers right now (sold out,
-- paused or ended, on Redis' clock) cannot gain a buyer until its epoch moves, so the
-- buyers read here are final for that epoch: a gateway may then refuse everyone else
-- without asking Redis, and still send a holder's retry on for its order id.
--
-- Returns {loaded, remaining, paused, epoch, closed, now_ms, buyers, revision, lent, got,
-- fenced}:
--   loaded 0 (nothing else meaningful) or 1; paused and closed 0/1; buyers is the list of
--   user ids when closed and the caller's epoch differs, else an empty list; revision is the
--   database row revision Redis reflects (a gateway holding a newer row syncs it); lent and
--   got are the units this shard of a sharded sale moved out and took in (lend.lua,
--   receive.lua): summed over the shards, their difference is stock on its way; fenced is 1
--   while the shard recovers from writes its node lost (confirm.lua), else 0.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', KEYS[1], 'remaining', 'paused', 'epoch', 'ends_at_ms', 'revision', 'lent_total',
  'got_total', 'fenced')
if not m[1] then
  return {0, 0, 0, '', 0, now, {}, 0, 0, 0, 0}
end
local fenced = 0
if m[8] then
  fenced = 1
end
local remaining = tonumber(m[1])
local paused = 0
if m[2] == '1' then
  paused = 1
end
local epoch = m[3] or '0'
local closed = 0
if remaining <= 0 or paused == 1 or now >= tonumber(m[4]) then
  closed = 1
end
local buyers = {}
if closed == 1 and epoch ~= ARGV[1] then
  buyers = redis.call('HKEYS', KEYS[2])
end
return {1, remaining, paused, epoch, closed, now, buyers, tonumber(m[5] or '0'), tonumber(m[6] or '0'),
  tonumber(m[7] or '0'), fenced}
