-- order_view.lua: what Redis knows of one seckill order, read atomically with Redis' clock.
--
-- KEYS[1] {promo:<id>}:reservations   KEYS[2] {promo:<id>}:pending   KEYS[3] {promo:<id>}:orders
-- ARGV[1] order id
--
-- Returns {reservation payload or "", 1 when pending else 0, status marker or "", now_ms}.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local reservation = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local pending = redis.call('ZSCORE', KEYS[2], ARGV[1]) and 1 or 0
local marker = redis.call('HGET', KEYS[3], ARGV[1]) or ''
return {reservation, pending, marker, now_ms}
