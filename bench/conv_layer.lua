-- One convolution layer of ResNet-32's shapes timed alone, for before/after
-- pairs of a kernel change (run the two binaries alternately):
--   build/bin/cbnet run bench/conv_layer.lua [channels = 16] [size = 32] [stride = 1] [threads = 2]
-- The input is a convolution's output (the CNHW layout a net's layers see);
-- prints the best of 15 repeats, in ms, of: the forward pass; the weight
-- gradient alone (the input needs none); the whole backward; and for stride 1
-- the batch norm + ReLU + convolution op (nn.BasicBlock's middle) forward and
-- backward. Stride 2 doubles the channels out, as ResNet's downsampling does.
local cbnet = require "cbnet"
local F = cbnet.F

local c, size = tonumber(arg[1]) or 16, tonumber(arg[2]) or 32
local stride, threads = tonumber(arg[3]) or 1, tonumber(arg[4]) or 2
cbnet.set_num_threads(threads)
cbnet.manual_seed(0)
local out_c = stride == 1 and c or 2 * c
local images = cbnet.randn(128, c, size, size)
local x = F.conv2d(images, cbnet.randn(c, c, 3, 3), nil, {padding = 1}):detach()
local w = (cbnet.randn(out_c, c, 3, 3) * 0.1):requires_grad_(true)
local conv_opts = {padding = 1, stride = stride}
local gy = F.conv2d(x, w, nil, conv_opts):detach()
gy = gy * 0 + cbnet.randn(table.unpack(gy:size())) -- a gradient in the output's layout

local function best(fn)
  fn()
  local t = math.huge
  for _ = 1, 15 do
    local t0 = cbnet.clock()
    fn()
    t = math.min(t, cbnet.clock() - t0)
  end
  return t * 1e3
end

local forward = best(function() F.conv2d(x, w, nil, conv_opts) end)
local weight_grad = best(function() w.grad = nil; F.conv2d(x, w, nil, conv_opts):backward(gy) end) - forward
local xg = x:clone():requires_grad_(true)
local backward = best(function()
  xg.grad, w.grad = nil, nil
  F.conv2d(xg, w, nil, conv_opts):backward(gy)
end) - forward
local line = ("%d -> %d channels, %dx%d, stride %d, %d threads: forward %.2f, weight gradient %.2f, "
  .. "backward %.2f ms"):format(c, out_c, size, size, stride, threads, forward, weight_grad, backward)
if stride == 1 then
  local g, b = cbnet.ones(c):requires_grad_(true), cbnet.zeros(c):requires_grad_(true)
  local mean, var = cbnet.zeros(c), cbnet.ones(c)
  local function fused()
    return F.batch_norm_relu_conv2d(xg, mean, var, w, nil, {padding = 1, bn_weight = g, bn_bias = b,
                                                            training = true})
  end
  local fused_forward = best(fused)
  local fused_backward = best(function()
    xg.grad, w.grad, g.grad, b.grad = nil, nil, nil, nil
    fused():backward(gy)
  end) - fused_forward
  line = line .. ("; batch norm + ReLU + conv forward %.2f, backward %.2f ms"):format(fused_forward, fused_backward)
end
print(line)
