-- Deletes every member key of an index and the index itself; returns how many keys existed.
-- KEYS[1] index.
local deleted = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  deleted = deleted + redis.call('DEL', member)
end
redis.call('DEL', KEYS[1])
return deleted
