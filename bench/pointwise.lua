-- Memory-bound kernels on 1 thread and on all threads: GB/s moved.
-- Run: build/bin/cbnet run bench/pointwise.lua [millions of elements]
local cbnet = require "cbnet"

local n = math.floor((tonumber(arg[1]) or 16) * 1e6)
local wall = require("cbnet.report").now -- wall-clock seconds (os.clock is CPU time)

local function median_time(fn, reps)
  fn()
  local times = {}
  for r = 1, reps do
    local t0 = wall()
    for _ = 1, 5 do fn() end
    times[r] = (wall() - t0) / 5
  end
  table.sort(times)
  return times[(reps + 1) // 2]
end

local g = cbnet.Generator(0)
local a, b, out = cbnet.randn(n, g), cbnet.randn(n, g), cbnet.empty(n)
local cases = {
  {"out = a + b (add_ into)", 12, function() out:copy_(a):add_(b) end},
  {"a:exp()", 8, function() return a:exp() end},
  {"a:sum()", 4, function() return a:sum() end},
  {"a:view(-1, 1000):sum(2)", 4, function() return a:view(-1, 1000):sum(2) end},
  {"transpose copy", 8, function() return a:view(4000, -1):t():contiguous() end},
}
local all = cbnet.get_num_threads()
print(("%d elements; GB/s at 1 thread and %d threads"):format(n, all))
for _, case in ipairs(cases) do
  local name, bytes_per, fn = case[1], case[2], case[3]
  cbnet.set_num_threads(1)
  local t1 = median_time(fn, 5)
  cbnet.set_num_threads(all)
  local tn = median_time(fn, 5)
  print(("%-28s %7.1f %7.1f   (%.2fx)"):format(name, bytes_per * n / t1 / 1e9,
    bytes_per * n / tn / 1e9, t1 / tn))
end
