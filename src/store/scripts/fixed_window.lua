-- Fixed window: at most ARGV[1] hits per window of ARGV[2] ms, starting at the first hit.
-- A denied hit is not counted. Returns "count ttl end" (window ttl in ms, window end in Unix
-- ms): the count after this hit when allowed, minus the count found when denied; the end names
-- the window, so that release.lua gives a hit back to its own window only. One string rather
-- than an array of three integers: the client parses a reply value by value, and one value
-- costs it a fraction of four.
-- INCR refuses a value that is not an integer ("not an integer" → InvalidValue).
local count = redis.call('INCR', KEYS[1])
if count < 1 then
  redis.call('DECR', KEYS[1])
  return redis.error_reply('INVALIDVALUE rate-limit key holds a value that is not a counter')
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  -- a new window, or a counter someone stored without expiry
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
local time = redis.call('TIME')
local window_end = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ttl
if count > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return string.format('%d %d %d', 1 - count, ttl, window_end)
end
return string.format('%d %d %d', count, ttl, window_end)
