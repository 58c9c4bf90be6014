-- Per-layer profile of the seed CNN, ResNet-32 and fastnet in training: the forward
-- and backward time of every layer (layers of the same kind and shape on one
-- row), the GFLOP/s of convolutions and linear layers against this machine's
-- sgemm rate, what the rows leave out (residual adds, shortcuts, loss,
-- optimizer: the whole step minus the layers), and each row's forward time
-- inside whole training steps ("in net fwd"), against its time alone.
--   build/bin/cbnet run bench/profile.lua [net = all|convnet|resnet32|fastnet] [batch = 128] [repeats = 5]
-- Each layer runs alone on the input it sees in the net (captured in a
-- training step); times are the fastest of the repeats (on a shared machine
-- the fastest is the one least disturbed by neighbours). The last line is a
-- bound: the step if only the rows with GF/s (the convolutions, with what is
-- fused into them) took time, at today's speed.
local cbnet = require "cbnet"
local models = require "cbnet.models"

local which, batch, repeats = arg[1] or "all", tonumber(arg[2]) or 128, tonumber(arg[3]) or 5
local clock = cbnet.clock

local function best_time(fn)
  fn() -- warm up
  local best = math.huge
  for _ = 1, repeats do
    local t0 = clock()
    fn()
    best = math.min(best, clock() - t0)
  end
  return best
end

local function sgemm_rate()
  local n = 1024
  local a, b = cbnet.randn(n, n), cbnet.randn(n, n)
  return 2 * n ^ 3 / best_time(function() a:matmul(b) end) / 1e9
end

-- Multiply-adds x 2 of one forward pass of the layer on x (conv and linear).
local function forward_flop(m, x, y)
  if m.name == "Conv2d" then
    local out = y:size()
    return 2 * out[1] * out[2] * out[3] * out[4] * (m.in_channels // m.groups)
      * m.kernel_size[1] * m.kernel_size[2]
  elseif m.name == "Linear" then
    return 2 * y:numel() * x:size(-1)
  end
end

local function shape_str(t) return table.concat(t:size(), "x") end

-- The leaf modules of model with the inputs they see, in forward order; and
-- each call's forward time inside whole training steps (`train`, run `repeats`
-- times after a warm-up; the fastest of each call's times): a layer there
-- reads what the layer before it wrote and writes into blocks that are not
-- in cache, where alone (the rows' times) it runs on hot caches.
local function capture(model, x, train)
  local seen, call = {}, 0
  -- fn(...) timed as the step's next call, whose entry entry(...) makes on the first step
  local function timed(entry, fn, ...)
    call = call + 1
    local s = seen[call]
    if not s then
      s = entry(...)
      s.net, seen[call] = math.huge, s
    end
    local t0 = clock()
    local out = fn(...)
    s.net = math.min(s.net, clock() - t0)
    return out
  end
  local function forward_entry(self, input, ...) -- ... : a batch norm's fused ReLU
    -- extra tensors (a batch norm's residual) are cut from the net's graph, as the input is
    local extra = table.pack(...)
    for i = 1, extra.n do
      if cbnet.is_tensor(extra[i]) then
        extra[i] = extra[i]:detach():requires_grad_(extra[i].requires_grad)
      end
    end
    return {module = self, input = input:detach(), needs_grad = input.requires_grad, extra = extra}
  end
  local function after_conv_entry(self, input, conv)
    return {module = self, input = input:detach(), needs_grad = input.requires_grad, extra = {n = 0},
            conv_before = conv}
  end
  for _, m in ipairs(model:modules()) do
    if #m._modules == 0 then
      local forward = m.forward
      m.forward = function(...) return timed(forward_entry, forward, ...) end
      if m.after_conv then -- a convolution, this batch norm, ReLU and pooling as one op
        local after_conv = m.after_conv
        m.after_conv = function(...) return timed(after_conv_entry, after_conv, ...) end
      end
    end
  end
  for i = 0, repeats do
    call = 0
    train()
    if i == 0 then -- the warm-up's times do not count
      for _, s in ipairs(seen) do s.net = math.huge end
    end
  end
  for _, m in ipairs(model:modules()) do m.forward, m.after_conv = nil, nil end -- the class's again
  return seen
end

local function profile(name, model, x, y)
  local opt = cbnet.optim.SGD(model:parameters(), {lr = 0.01, momentum = 0.9})
  local function train()
    opt:zero_grad()
    cbnet.F.cross_entropy(model(x), y):backward()
    opt:step()
  end
  local step = best_time(train)
  -- where the thread pool's time goes in whole steps: both cores busy?
  local steps, t0 = 5, clock()
  cbnet.pool_stats_reset()
  for _ = 1, steps do train() end
  local pool, wall = cbnet.pool_stats(), (clock() - t0) / steps
  local rows, order = {}, {}
  for _, s in ipairs(capture(model, x, train)) do
    local m, input = s.module, s.input
    local fused = s.extra[1] and " +ReLU" or "" -- a batch norm with the ReLU after it (nn.Sequential)
    local conv = s.extra[4] -- and the convolution after that (nn.BasicBlock: F.batch_norm_relu_conv2d)
    if conv then fused = fused .. " +" .. conv.name .. " " .. conv:extra_repr() end
    local before = s.conv_before -- or before it, the ReLU and pooling after (F.conv2d_batch_norm_relu_pool)
    local key = ("%s %s%s <- %s"):format(m.name, m:extra_repr(), fused, shape_str(input))
    if before then
      key = ("%s %s +BatchNorm2d +ReLU +MaxPool2d <- %s"):format(before.name, before:extra_repr(), shape_str(input))
    end
    local row = rows[key]
    if not row then
      local inp = input:clone()
      if s.needs_grad then inp:requires_grad_() end
      local function run()
        if before then return m:after_conv(inp, before) end
        return m(inp, table.unpack(s.extra, 1, s.extra.n))
      end
      local out = run()
      -- a gradient in the output's layout, as the next layer would pass it
      local gy = out:detach() * 0 + cbnet.randn(table.unpack(out:size()))
      local fwd = best_time(run)
      local both = best_time(function()
        if s.needs_grad then inp.grad = nil end
        m:zero_grad()
        run():backward(gy)
      end)
      local flop = before and forward_flop(before, input, cbnet.no_grad(function() return before(input) end))
        or forward_flop(conv or m, input, out)
      -- backward: the weight gradient, plus the input gradient when needed
      local bwd_flop = flop and flop * (s.needs_grad and 2 or 1)
      row = {key = key, count = 0, fwd = fwd, bwd = math.max(both - fwd, 0), flop = flop,
             bwd_flop = bwd_flop, net = 0}
      rows[key] = row
      order[#order + 1] = row
    end
    row.count = row.count + 1
    row.net = row.net + s.net
  end
  print(("\n%s, batch %d: one training step %.1f ms (%.0f img/s)"):format(name, x:size(1),
    step * 1e3, x:size(1) / step))
  print(("%-62s %3s %9s %9s %8s %8s %10s"):format("layer <- input", "n", "fwd ms", "bwd ms",
    "fwd GF/s", "bwd GF/s", "in net fwd"))
  local total, compute, net, alone = 0, 0, 0, 0
  for _, r in ipairs(order) do
    total = total + r.count * (r.fwd + r.bwd)
    net, alone = net + r.net, alone + r.count * r.fwd
    if r.flop then compute = compute + r.count * (r.fwd + r.bwd) end
    print(("%-62s %3d %9.2f %9.2f %8s %8s %10.2f"):format(r.key:sub(1, 62), r.count, r.count * r.fwd * 1e3,
      r.count * r.bwd * 1e3, r.flop and ("%.1f"):format(r.flop / r.fwd / 1e9) or "",
      r.bwd_flop and r.bwd > 0 and ("%.1f"):format(r.bwd_flop / r.bwd / 1e9) or "", r.net * 1e3))
  end
  print(("the layers' forward: %.1f ms alone, %.1f ms in the net"):format(alone * 1e3, net * 1e3))
  print(("%-62s %3s %19.2f"):format("rest of the step (adds, shortcuts, loss, optimizer)", "",
    (step - total) * 1e3))
  -- a bound for speed work: the rows with GF/s (convolutions, linear layers, and the batch norms
  -- fused into them) at today's speed, everything else free
  print(("the rows with GF/s alone: %.1f ms, %.0f img/s if everything else took no time"):format(
    compute * 1e3, x:size(1) / compute))
  if cbnet.get_num_threads() > 1 then
    local inside = pool.loop_seconds / steps
    print(("thread pool: %d parallel loops per step, %.1f of its %.1f ms; in them the threads wait "
      .. "%.1f %% of their time; %.1f ms on one core outside them"):format(pool.loops // steps,
      inside * 1e3, wall * 1e3, 100 * (1 - pool.busy_seconds / pool.thread_seconds),
      (wall - inside) * 1e3))
  end
end

print(("cbnet %s, %d threads, conv path %s, BLAS kernel %s"):format(cbnet.version,
  cbnet.get_num_threads(), cbnet.conv_path(), cbnet.info().blas_kernel))
print(("sgemm 1024^3: %.1f GFLOP/s"):format(sgemm_rate()))
cbnet.manual_seed(0)
local x, y = cbnet.randn(batch, 3, 32, 32), cbnet.randint(0, 10, {batch})
if which == "all" or which == "convnet" then profile("seed CNN", models.convnet(), x, y) end
if which == "all" or which == "resnet32" then profile("ResNet-32", models.resnet32(), x, y) end
if which == "all" or which == "fastnet" then profile("fastnet 64/128/256", models.fastnet(), x, y) end
