-- Extends a lock only if the caller still owns it: a holder still at work keeps others
-- waiting on it; one whose lock already expired and was taken never extends the new holder's.
-- KEYS[1] lock; ARGV[1] owner; ARGV[2] new time to live in milliseconds.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
