-- Stores a cache entry and its URL's Vary list, records both in the URL's index (so that every
-- variant can be invalidated at once), and releases the stampede lock if the caller owns it.
-- A storable answer ends the entry's hit-for-miss memo.
-- KEYS[1] entry; KEYS[2] Vary list; KEYS[3] URL index; KEYS[4] hit-for-miss memo;
-- KEYS[5] lock (optional).
-- ARGV[1] entry bytes; ARGV[2] Vary list bytes; ARGV[3] TTL in ms; ARGV[4] lock owner.
local px = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
redis.call('SET', KEYS[2], ARGV[2], 'PX', px)
redis.call('SADD', KEYS[3], KEYS[1], KEYS[2])
-- the index lives as long as its longest-lived member
if redis.call('PTTL', KEYS[3]) < px then
  redis.call('PEXPIRE', KEYS[3], px)
end
redis.call('DEL', KEYS[4])
if KEYS[5] and redis.call('GET', KEYS[5]) == ARGV[4] then
  redis.call('DEL', KEYS[5])
end
return 1
