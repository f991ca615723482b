-- INCRBY only on an existing key (Django's incr raises on a missing one); INCRBY keeps the TTL.
-- KEYS[1] key; ARGV[1] delta. Returns the new value, or false when the key is missing.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
