-- The members of an index whose keys exist, each with its PTTL; dead members are dropped.
-- KEYS[1] index. Returns a flat array: member, pttl, member, pttl, ...
local live = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local ttl = redis.call('PTTL', member)
  if ttl == -2 then
    redis.call('SREM', KEYS[1], member)
  else
    live[#live + 1] = member
    live[#live + 1] = tostring(ttl)
  end
end
return live
