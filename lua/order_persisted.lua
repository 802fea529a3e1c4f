-- order_persisted.lua: the writer stored these orders; record what the database holds so a
-- buyer's poll is answered from Redis, and wake the gateways' long polls.
--
-- KEYS[1] {promo:<id>}:orders (hash: order id -> status marker)   KEYS[2] {promo:<id>}:pending
-- ARGV[1] the notification channel
-- ARGV[2..] seven per order: order id, status rank, status, user id, total cents,
--           expires at (ms, 0 when none), created at (ms)
--
-- A marker is "rank|status|user|total|expires_ms|created_ms|written_ms", written_ms on
-- Redis' clock. A marker never moves to a lower rank (a redelivered copy of an order that
-- was paid meanwhile leaves `paid` in place). The orders leave the pending set. Each changed
-- order id is published on the channel.
-- Returns the number of markers written.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local written = 0
for i = 2, #ARGV, 7 do
  local id, rank = ARGV[i], tonumber(ARGV[i + 1])
  redis.call('ZREM', KEYS[2], id)
  local current = redis.call('HGET', KEYS[1], id)
  local current_rank = current and tonumber(string.match(current, '^(%d+)|')) or -1
  if rank > current_rank then
    redis.call('HSET', KEYS[1], id, table.concat({rank, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      ARGV[i + 5], ARGV[i + 6], now_ms}, '|'))
    redis.call('PUBLISH', ARGV[1], id)
    written = written + 1
  end
end
return written
