-- sgemm throughput through cbnet's matmul, on the kernel cbnet chose and on
-- the kernels OpenBLAS offers, each in a fresh process (OpenBLAS fixes its
-- kernel at load). Run: build/bin/cbnet run bench/sgemm.lua [size] [reps]
-- Prints GFLOP/s (median of reps) per kernel and the ratio to cbnet's choice.
local cbnet = require "cbnet"

local size = tonumber(arg[1]) or 2048
local reps = tonumber(arg[2]) or 5

local wall = require("cbnet.report").now -- wall-clock seconds (os.clock is CPU time)

local function measure()
  local g = cbnet.Generator(0)
  local a, b = cbnet.randn(size, size, g), cbnet.randn(size, size, g)
  a:matmul(b) -- warm up (thread start, page faults)
  local times = {}
  for r = 1, reps do
    local t0 = wall()
    local inner = 3
    for _ = 1, inner do a:matmul(b) end
    times[r] = (wall() - t0) / inner
  end
  table.sort(times)
  return 2 * size ^ 3 / times[(reps + 1) // 2] / 1e9
end

if os.getenv("CBNET_BENCH_CHILD") then
  print(("%.1f"):format(measure()))
  return
end

local info = cbnet.info()
print(("cbnet %s, %s, %d threads, %dx%d sgemm, median of %d"):format(
  info.version, info.blas_config, info.threads, size, size, reps))
local own = measure()
print(("%-28s %8.1f GFLOP/s   (kernel %s: %s)"):format("cbnet default", own,
  info.blas_kernel, info.blas_kernel_source))
local exe = arg[-2] or "cbnet" -- arg[-2] is the cbnet command, arg[-1] "run"
for _, kernel in ipairs{"Cooperlake", "SkylakeX", "Haswell", "Zen", "Sandybridge", "Prescott"} do
  local cmd = ("CBNET_BENCH_CHILD=1 OPENBLAS_CORETYPE=%s %s run %s %d %d"):format(
    kernel, exe, arg[0], size, reps)
  local f = io.popen(cmd)
  local gflops = tonumber(f:read("l") or "")
  f:close()
  if gflops then
    print(("%-28s %8.1f GFLOP/s   (%.2fx cbnet's)"):format("OPENBLAS_CORETYPE=" .. kernel,
      gflops, gflops / own))
  end
end
