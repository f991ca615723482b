-- GCRA, redis-cell's arithmetic with quantity 1, on the server clock (so instances with skewed
-- clocks share one limit). Mirrors gcra_step in src/store/rate.rs.
-- KEYS[1] key; ARGV[1] emission interval T (us); ARGV[2] tolerance tau = T * (burst + 1) (us).
-- Stores the theoretical arrival time (us since the epoch) with a TTL of tat - now.
-- Returns one integer, which is all the caller needs to rebuild the decision from T and tau:
-- allowed, the key's new TTL (us, > 0); denied, minus its current TTL (us, < 0).
-- Kept this small on purpose: every redis.call and every returned table costs Redis CPU on
-- each request.
local emission = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = time[1] * 1000000 + time[2]
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = tonumber(stored)
  if tat == nil then
    return redis.error_reply('INVALIDVALUE rate-limit key holds a value that is not a counter')
  end
  if tat < now then tat = now end
end
local ttl = tat + emission - now
if ttl > tonumber(ARGV[2]) then
  return now - tat
end
-- a number argument is sent as its exact integer digits (Redis formats it with %.17g or
-- shortest round-trip), cheaper than string.format
redis.call('SET', KEYS[1], now + ttl, 'PX', math.ceil(ttl / 1000))
return ttl
