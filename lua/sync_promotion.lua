-- sync_promotion.lua: bring a promotion's rules and stock in Redis up to one revision of its
-- database row (warm-up, edits, pause/resume, add stock, and the refresher's catch-up).
--
-- KEYS[1..6] {promo:<id>}: meta, buyers, requests, reservations, pending, released
-- ARGV[1] stock   ARGV[2] per-user limit   ARGV[3] starts at ms   ARGV[4] ends at ms
-- ARGV[5] paused ("1" or "0")   ARGV[6] identity (the row's creation time, µs)
-- ARGV[7] revision (bumped by every write to the row)
-- ARGV[8] ms: a first load is allowed only while Redis' clock is before it. The sale's start
--         for most callers; an edit of a sale that had not started passes the start it had
--         (nothing was sold before it); the request that created the row passes the largest
--         64-bit integer (nothing can have been sold yet)
--
-- Every write to the row bumps its revision and Redis keeps the revision it reflects, so a
-- caller holding an older read changes nothing: a stale warm-up cannot resume a paused sale,
-- undo an edit or count added stock twice. Stock moves by difference: remaining changes by
-- (new stock - stock Redis has), so units already reserved stay reserved whoever applies what.
-- A first load records this node's replication id as the history the shard's data belongs
-- to (confirm.lua fences the shard when it finds another).
-- Keys left by another promotion with the same id (a database restored or recreated beside a
-- Redis that kept its data) are dropped first. A meta hash without identity (only what
-- release.lua's counters left after meta was lost) counts as not loaded, and nothing is
-- dropped for it. A new meta hash starts its epoch at Redis' clock (µs), so no gateway's
-- final buyer list from an earlier copy matches it.
--
-- Returns {code, remaining}:
--    1 loaded (first load)    2 applied a newer revision    3 already at this revision or newer
--   -1 refused: not loaded and started on Redis' clock (a started sale Redis lost may have
--      sold units; only repair.lua restores it)
--   -2 refused: the new stock is below the units already reserved (remaining would go negative)

local meta = KEYS[1]
local identity = redis.call('HGET', meta, 'identity')
if identity and identity ~= ARGV[6] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  identity = false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stock = tonumber(ARGV[1])
local revision = tonumber(ARGV[7])

if not identity then
  if now >= tonumber(ARGV[8]) then
    return {-1, 0}
  end
  local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
  redis.call('HSET', meta, 'remaining', stock, 'stock', stock, 'identity', ARGV[6], 'per_user_limit', ARGV[2],
    'starts_at_ms', ARGV[3], 'ends_at_ms', ARGV[4], 'paused', ARGV[5], 'revision', revision,
    'epoch', t[1] .. string.format('%06d', tonumber(t[2])), 'history', replid)
  return {1, stock}
end

local m = redis.call('HMGET', meta, 'remaining', 'stock', 'revision')
local remaining = tonumber(m[1])
if revision <= tonumber(m[3] or '0') then
  return {3, remaining}
end
remaining = remaining + stock - tonumber(m[2])
if remaining < 0 then
  return {-2, tonumber(m[1])}
end
redis.call('HSET', meta, 'remaining', remaining, 'stock', stock, 'per_user_limit', ARGV[2],
  'starts_at_ms', ARGV[3], 'ends_at_ms', ARGV[4], 'paused', ARGV[5], 'revision', revision)
redis.call('HINCRBY', meta, 'epoch', 1)
return {2, remaining}
