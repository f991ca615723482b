-- Fixed window: at most ARGV[1] hits per window of ARGV[2] ms, starting at the first hit.
-- A denied hit is not counted. Returns {allowed (0/1), count, window ttl in ms}.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local current = redis.call('GET', KEYS[1])
local count = 0
if current then
  count = tonumber(current)
  if count == nil or count < 0 then
    return redis.error_reply('INVALIDVALUE rate-limit key holds a value that is not a counter')
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if count >= limit then
  if ttl < 0 then
    ttl = window
    if current then redis.call('PEXPIRE', KEYS[1], window) end
  end
  return {0, count, ttl}
end
count = redis.call('INCR', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {1, count, ttl}
