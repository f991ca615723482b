-- Moves a value to its key at another version, keeping the TTL (Django's incr_version, atomic).
-- KEYS[1] current key; KEYS[2] key at the new version. Returns 1 if moved, 0 if missing.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
