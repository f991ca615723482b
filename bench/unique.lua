-- Gives every request its own path: BENCH_PATH with "{n}" replaced by a number no other
-- request of the run uses (a cache miss, a fresh rate-limit key).
local template = os.getenv("BENCH_PATH")
local counter = 0
local prefix

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  prefix = tostring(math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  local path = template:gsub("{n}", prefix .. "-" .. counter)
  return wrk.format("GET", path)
end
