-- Gives back one hit that rate_limit counted. Mirrors release in src/store/memory.rs.
-- KEYS[1] key; ARGV[1] policy ("cooldown", "window" or "gcra"); ARGV[2] the cooldown ticket or
-- the GCRA emission interval in us.
-- Returns 1 if something was given back.
local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
if ARGV[1] == 'cooldown' then
  -- only the hit that set the flag may clear it: a later holder keeps its flag
  if current == ARGV[2] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if ARGV[1] == 'window' then
  local count = tonumber(current)
  if count and count > 0 then
    redis.call('DECR', KEYS[1])
    return 1
  end
  return 0
end
-- gcra: move the theoretical arrival time back by one emission interval
local tat = tonumber(current)
if not tat then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local earlier = tat - tonumber(ARGV[2])
if earlier <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', earlier), 'PX', math.ceil((earlier - now) / 1000))
end
return 1
