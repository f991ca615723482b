-- Send flag: at most one hit per interval.
-- KEYS[1] flag key; ARGV[1] interval in ms; ARGV[2] this hit's ticket (so that only this hit
-- can release the flag again).
-- Returns {allowed (0/1), remaining ttl in ms}.
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then
  return {1, tonumber(ARGV[1])}
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  -- A flag without expiry would block forever: give it the interval.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {0, ttl}
