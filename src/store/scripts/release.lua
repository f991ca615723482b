-- Gives back one hit that rate_limit counted. Mirrors release in src/store/memory.rs.
-- KEYS[1] key; ARGV[1] policy ("cooldown", "window" or "gcra"); ARGV[2] the cooldown ticket,
-- the end in Unix ms of the window the hit was counted in (empty when unknown), or the GCRA
-- emission interval in us; ARGV[3] for a window, its length in ms.
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
  if not count or count <= 0 then
    return 0
  end
  local counted_end = tonumber(ARGV[2])
  local ttl = redis.call('PTTL', KEYS[1])
  if counted_end and ttl >= 0 then
    -- the window the hit was counted in has ended if this one ends later: a later window
    -- starts when that one ended, so it ends a whole window later; the slack absorbs the
    -- millisecond both ends were read to
    local time = redis.call('TIME')
    local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    local slack = math.min(tonumber(ARGV[3]) / 2, 1000)
    if now + ttl > counted_end + slack then
      return 0
    end
  end
  redis.call('DECR', KEYS[1])
  return 1
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
