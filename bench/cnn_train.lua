-- Training throughput of the seed study's reference CNN, cbnet against
-- PyTorch on the same threads, in one run:
--   conv3x3 3->32 + BN + ReLU + maxpool2, conv3x3 32->64 + BN + ReLU + maxpool2,
--   linear 4096->10; SGD with momentum; 3x32x32 random inputs.
-- Run: build/bin/cbnet run bench/cnn_train.lua [steps=30] [repeats=5] [batch sizes=64,128]
-- Prints images/s (median of the repeats, the two alternating) for both, the
-- ratio, and cbnet's peak memory. PyTorch is Debian's python3-torch (bench/cnn_train_torch.py).
local cbnet = require "cbnet"
local nn, F = cbnet.nn, cbnet.F

local steps = tonumber(arg[1]) or 30
local repeats = tonumber(arg[2]) or 5
local batch_sizes = {}
for b in (arg[3] or "64,128"):gmatch("%d+") do batch_sizes[#batch_sizes + 1] = tonumber(b) end

local wall = require("cbnet.report").now -- wall-clock seconds

local function peak_rss_mib()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

local function model()
  return nn.Sequential(
    nn.Conv2d(3, 32, 3, {padding = 1}), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, {padding = 1}), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4096, 10))
end

-- A trainer for one batch size: each call runs `steps` steps, returns images/s.
local function cbnet_trainer(batch)
  cbnet.manual_seed(0)
  local net = model()
  local opt = cbnet.optim.SGD(net:parameters(), {lr = 0.01, momentum = 0.9})
  local x, y = cbnet.randn(batch, 3, 32, 32), cbnet.randint(0, 10, {batch})
  local function step()
    local loss = F.cross_entropy(net(x), y)
    opt:zero_grad()
    loss:backward()
    opt:step()
  end
  for _ = 1, 3 do step() end -- warm up
  return function()
    local t0 = wall()
    for _ = 1, steps do step() end
    return steps * batch / (wall() - t0)
  end
end

-- PyTorch runs one repeat per call, in a fresh process (start-up not timed).
local function torch_images_per_second(batch)
  local script = arg[0]:gsub("cnn_train%.lua$", "cnn_train_torch.py")
  local cmd = ("/usr/bin/python3 %s %d %d 1 %d 2>/dev/null"):format(script, batch, steps,
    cbnet.get_num_threads())
  local f = io.popen(cmd)
  local rate = tonumber(f:read("l") or "")
  f:close()
  return rate
end

local function median(list)
  if #list == 0 then return nil end
  table.sort(list)
  return list[(#list + 1) // 2]
end

print(("cbnet %s, %d threads, BLAS kernel %s; %d steps x %d repeats"):format(cbnet.version,
  cbnet.get_num_threads(), cbnet.info().blas_kernel, steps, repeats))
print(("%6s %14s %14s %8s"):format("batch", "cbnet img/s", "PyTorch img/s", "ratio"))
-- The two alternate, repeat by repeat, so that a noisy neighbour on the
-- machine slows both alike; the ratio is of the medians.
for _, batch in ipairs(batch_sizes) do
  local train = cbnet_trainer(batch)
  local ours, theirs = {}, {}
  for r = 1, repeats do
    ours[r] = train()
    theirs[#theirs + 1] = torch_images_per_second(batch)
  end
  local a, b = median(ours), median(theirs)
  print(("%6d %14.0f %14s %8s"):format(batch, a, b and ("%.0f"):format(b) or "n/a",
    b and ("%.2f"):format(a / b) or "n/a"))
end
print(("cbnet peak memory (VmHWM): %.0f MiB"):format(peak_rss_mib()))
