-- GCRA, redis-cell's arithmetic with quantity 1, on the server clock (so instances with skewed
-- clocks share one limit). Mirrors gcra_step in src/store/rate.rs.
-- KEYS[1] key; ARGV[1] emission interval T (us); ARGV[2] tolerance tau = T * (burst + 1) (us).
-- Stores the theoretical arrival time (us since the epoch) with a TTL of tat - now.
-- Returns {allowed (0/1), remaining, retry_after (us, -1 if allowed), reset (us)}.
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = tonumber(stored)
  if tat == nil then
    return redis.error_reply('INVALIDVALUE rate-limit key holds a value that is not a counter')
  end
  if tat < now then tat = now end
end
local new_tat = tat + emission
local allow_at = new_tat - tolerance
local function remaining(ttl)
  local left = tolerance - ttl
  if left <= 0 then return 0 end
  return math.floor(left / emission)
end
if now < allow_at then
  local ttl = tat - now
  return {0, remaining(ttl), allow_at - now, ttl}
end
local ttl = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ttl / 1000))
return {1, remaining(ttl), -1, ttl}
