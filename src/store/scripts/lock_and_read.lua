-- Takes a cache entry's stampede lock and, in the same step, reads what is stored now: an
-- entry written between the caller's lookup and this lock must not be rendered a second time.
-- KEYS[1] lock; KEYS[2] Vary list; KEYS[3] entry. ARGV[1] owner; ARGV[2] lock TTL in ms.
-- Returns false when another holds the lock, else {Vary list or false, entry or false}.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
