-- Adds a member key to an index set and drops members whose keys are gone.
-- KEYS[1] index; ARGV[1] member (a full key). Members are read by name: single-node Redis, or
-- a cluster with index and members in one slot.
redis.call('SADD', KEYS[1], ARGV[1])
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', member) == 0 then
    redis.call('SREM', KEYS[1], member)
  end
end
return 1
