-- order_status.lua: an order's status changed in the database (paid, cancelled, ...); move
-- its marker forward and wake the gateways' long polls.
--
-- KEYS[1] {promo:<id>}:orders (hash: order id -> status marker, see order_persisted.lua)
-- ARGV[1] the notification channel   ARGV[2] order id   ARGV[3] status rank   ARGV[4] status
--
-- Only an existing marker moves, and only to a higher rank: an order Redis holds no marker
-- for is answered from the database anyway.
-- Returns 1 when the marker moved, 0 otherwise.

local current = redis.call('HGET', KEYS[1], ARGV[2])
if not current then
  return 0
end
local rank, rest = string.match(current, '^(%d+)|[^|]*|(.*)|%d+$')
if not rank or tonumber(ARGV[3]) <= tonumber(rank) then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[2], table.concat({ARGV[3], ARGV[4], rest, now_ms}, '|'))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
