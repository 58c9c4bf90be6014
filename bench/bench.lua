-- The speed benchmark (make bench): cbnet against PyTorch on the same machine
-- and threads, in one run.
--   build/bin/cbnet run bench/bench.lua [--repeats 5] [--threads 2,1] [--only resnet32] [--isa avx2]
-- Workloads: the seed CNN training at batch 64 and 128 and evaluating at 256;
-- ResNet-32 (CIFAR, option A) training at batch 128. Every measurement is a
-- fresh process (so peak memory is its own): warm-up steps, then timed steps.
-- The engines alternate within each repeat (cbnet, then each PyTorch), so a
-- noisy neighbour slows all alike; the table shows medians and the ratio of
-- cbnet to the faster PyTorch. PyTorch: Debian's python3-torch
-- (/usr/bin/python3) and the PyPI release in build/torch-venv (make bench
-- installs both); either may be missing, then its column says n/a.
-- --isa avx2 holds both engines to AVX2 and FMA by their own switches (below), an
-- AVX2-only machine kind (the EPYC of issue 8) emulated on an AVX-512 one.
local cbnet = require "cbnet"
local models = require "cbnet.models"

local workloads = {
  {name = "seed CNN train", net = "convnet", mode = "train", batch = 64, steps = 30},
  {name = "seed CNN train", net = "convnet", mode = "train", batch = 128, steps = 20},
  {name = "seed CNN eval", net = "convnet", mode = "eval", batch = 256, steps = 20},
  {name = "ResNet-32 train", net = "resnet32", mode = "train", batch = 128, steps = 8},
}

local function peak_rss_mib()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

-- The child: one measurement, printed as "images/s peak-MiB".
if arg[1] == "--child" then
  local net_name, mode = arg[2], arg[3]
  local batch, steps, threads = tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6])
  cbnet.set_num_threads(threads)
  cbnet.manual_seed(0)
  local net = models.get(net_name)
  local x, y = cbnet.randn(batch, 3, 32, 32), cbnet.randint(0, 10, {batch})
  local step
  if mode == "train" then
    local opt = cbnet.optim.SGD(net:parameters(), {lr = 0.01, momentum = 0.9, weight_decay = 5e-4})
    step = function()
      opt:zero_grad()
      cbnet.F.cross_entropy(net(x), y):backward()
      opt:step()
    end
  else
    net:eval()
    step = function() cbnet.no_grad(function() return net(x):argmax(2) end) end
  end
  for _ = 1, 3 do step() end
  local t0 = cbnet.clock()
  for _ = 1, steps do step() end
  print(("%.1f %.0f"):format(steps * batch / (cbnet.clock() - t0), peak_rss_mib()))
  return
end

local cli = require "cbnet.cli"
local opts = cli.parse(arg, {
  name = "bench", summary = "cbnet against PyTorch, in one run",
  options = {
    {"repeats", 5, "measurements of each workload per engine (medians are shown)"},
    {"threads", {2, 1}, "thread counts to measure, comma-separated"},
    {"only", "", "run only workloads whose net is this (convnet or resnet32)"},
    {"isa", "native", "native, or avx2: both engines held to AVX2 and FMA"},
  }})

-- Each engine's own switches for --isa avx2: cbnet's conv path and OpenBLAS's
-- kernel; PyTorch's ATen kernels, oneDNN's convolutions, and its BLAS (MKL in
-- the PyPI wheel, OpenBLAS in Debian's). cbnet's batch norm and pointwise
-- loops pick their AVX-512 clones all the same (GCC's target_clones has no
-- switch), so a real AVX2 machine may be a little slower.
local ISA_ENV = {
  native = {cbnet = "", torch = ""},
  avx2 = {cbnet = "CBNET_CONV=avx2-winograd OPENBLAS_CORETYPE=Haswell ",
          torch = "ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 "
            .. "MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell "},
}
local isa = ISA_ENV[opts.isa]
if not isa then
  io.stderr:write(("bench: --isa must be native or avx2, got '%s'\n"):format(opts.isa))
  os.exit(2)
end
local function runs_path(name)
  for _, path in ipairs(cbnet.conv_paths()) do
    if path == name then return true end
  end
  return false
end
if opts.isa == "avx2" and not runs_path("avx2-winograd") then
  io.stderr:write("bench: --isa avx2: this CPU has no AVX2 and FMA\n")
  os.exit(2)
end

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local self_command = cli.self_command(arg) -- this script as it was started
local engines = {
  {name = "cbnet", run = function(w, threads)
    return ("%s%s --child %s %s %d %d %d"):format(isa.cbnet, self_command, w.net, w.mode, w.batch,
      w.steps, threads)
  end},
}
for _, python in ipairs{{"PyTorch (Debian)", "/usr/bin/python3"},
                        {"PyTorch (PyPI)", here .. "/../build/torch-venv/bin/python"}} do
  local probe = io.popen(("%q -c 'import torch; print(torch.__version__)' 2>/dev/null"):format(python[2]))
  local version = probe and probe:read("l")
  if probe then probe:close() end
  if version then
    engines[#engines + 1] = {name = ("%s %s"):format(python[1], version:match("^[%d.]+")),
      run = function(w, threads)
        return ("%s%q %q %s %s %d %d %d 2>/dev/null"):format(isa.torch, python[2],
          here .. "/bench_torch.py", w.net, w.mode, w.batch, w.steps, threads)
      end}
  end
end

local function measure(cmd)
  local f = io.popen(cmd)
  local line = f:read("l") or ""
  f:close()
  local rate, rss = line:match("^(%S+) (%S+)")
  return tonumber(rate), tonumber(rss)
end

local function median(list)
  if #list == 0 then return nil end
  table.sort(list)
  return list[(#list + 1) // 2]
end

local machine = require("cbnet.experiment").machine()
if opts.isa == "avx2" then -- what the children are told, not what this process found
  machine.conv, machine.blas_kernel = "avx2-winograd", "Haswell"
end
print(("cbnet %s; conv path %s; BLAS kernel %s; CPU: %s"):format(cbnet.version, machine.conv,
  machine.blas_kernel, machine.cpu))
if opts.isa ~= "native" then
  print(("ISA held to %s: cbnet with %s; PyTorch with %s"):format(opts.isa,
    (isa.cbnet:gsub("%s+$", "")), (isa.torch:gsub("%s+$", ""))))
end
local names = {}
for i, e in ipairs(engines) do names[i] = e.name end
print(("engines: %s; %d repeats, alternating"):format(table.concat(names, ", "), opts.repeats))
local header = ("%-16s %5s %3s"):format("workload", "batch", "thr")
for _, e in ipairs(engines) do header = header .. ("  %22s"):format(e.name:sub(1, 22)) end
print(header .. "   ratio")
print(("%-16s %5s %3s"):format("", "", "") .. ("  %22s"):format("img/s (peak MiB)"):rep(#engines)
  .. "  cbnet/best")
for _, threads in ipairs(opts.threads) do
  for _, w in ipairs(workloads) do
    if opts.only == "" or opts.only == w.net then
      local rates, rss = {}, {}
      for i = 1, #engines do rates[i], rss[i] = {}, {} end
      for _ = 1, opts.repeats do
        for i, e in ipairs(engines) do
          local r, m = measure(e.run(w, tonumber(threads)))
          if r then
            rates[i][#rates[i] + 1] = r
            rss[i][#rss[i] + 1] = m
          end
        end
      end
      local line = ("%-16s %5d %3d"):format(w.name, w.batch, threads)
      local best
      for i = 1, #engines do
        local r, m = median(rates[i]), median(rss[i])
        line = line .. ("  %22s"):format(r and ("%.0f (%.0f)"):format(r, m) or "n/a")
        if i > 1 and r and (not best or r > best) then best = r end
      end
      local ours = median(rates[1])
      print(line .. ("  %s"):format(ours and best and ("%.2fx"):format(ours / best) or "n/a"))
      io.stdout:flush()
    end
  end
end
