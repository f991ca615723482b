-- Releases a lock only if the caller still owns it: a holder whose lock expired and was taken
-- by another never frees the new holder's lock.
-- KEYS[1] lock; ARGV[1] owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
