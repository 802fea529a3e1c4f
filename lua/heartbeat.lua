-- heartbeat.lua: a gateway or an order writer says it is alive, on Redis' clock (so the
-- dashboard compares heartbeats from hosts whose clocks differ).
--
-- KEYS[1] seckill:instances:<scope> (sorted set: "<role>:<name>" -> last heartbeat, ms)
-- ARGV[1] member ("gateway:127.0.0.1:8080")   ARGV[2] forget members silent this many ms
--
-- Returns Redis' time in ms.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]))
return now_ms
