-- Takes a cache entry's stampede lock and, in the same step, reads what is stored now: an
-- entry written between the caller's lookup and this lock must not be rendered a second time.
-- KEYS[1] lock; KEYS[2] Vary list; KEYS[3] entry; KEYS[4] the entry's hit-for-miss memo.
-- ARGV[1] owner; ARGV[2] lock TTL in ms.
-- Returns {false, false, 1} without taking the lock when the memo says the entry's last answer
-- could not be stored (no instance waits for an entry that will not come); false when another
-- holds the lock; else {Vary list or false, entry or false, 0}.
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {false, false, 1}
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3]), 0}
